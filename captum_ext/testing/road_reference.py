"""ROAD's noisy linear imputation without noise, one image at a time, as a sparse linear system built pixel by
pixel and solved directly with SciPy: the reference for :func:`captum_ext.metrics.road.road_impute`."""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

#: ``((row offset, column offset), weight)`` of ROAD's eight neighbours.
_NEIGHBOURS = [((-1, -1), 1 / 12), ((-1, 0), 1 / 6), ((-1, 1), 1 / 12), ((0, -1), 1 / 6), ((0, 1), 1 / 6),
               ((1, -1), 1 / 12), ((1, 0), 1 / 6), ((1, 1), 1 / 12)]


def road_impute_sparse(image: Tensor, removed: Tensor) -> Tensor:
    """One image's removed pixels imputed by ROAD's linear system (no noise), solved directly.

    Args:
        image (Tensor): ``C×H×W`` image.
        removed (Tensor): ``H×W`` bools.

    Returns:
        Tensor: ``C×H×W`` float64 image.

    Example::

        >>> image = torch.tensor([[[0.0, 0.0], [0.0, 6.0]]])
        >>> road_impute_sparse(image, torch.tensor([[False, False], [False, True]]))[0, 1, 1]
        tensor(0., dtype=torch.float64)
    """
    from scipy.sparse import lil_matrix
    from scipy.sparse.linalg import spsolve

    values = image.detach().cpu().to(torch.float64).numpy()
    mask = removed.detach().cpu().numpy().astype(bool)
    height, width = mask.shape
    unknowns = {(int(r), int(c)): k for k, (r, c) in enumerate(np.argwhere(mask))}
    if not unknowns:
        return torch.from_numpy(values.copy())
    system = lil_matrix((len(unknowns), len(unknowns)))
    right = np.zeros((len(unknowns), values.shape[0]))
    for (row, column), k in unknowns.items():
        for (dr, dc), weight in _NEIGHBOURS:
            r, c = row + dr, column + dc
            if not (0 <= r < height and 0 <= c < width):
                continue
            system[k, k] += weight
            if mask[r, c]:
                system[k, unknowns[(r, c)]] -= weight
            else:
                right[k] += weight * values[:, r, c]
    solved = spsolve(system.tocsc(), right).reshape(len(unknowns), -1)
    result = values.copy()
    for (row, column), k in unknowns.items():
        result[:, row, column] = solved[k]
    return torch.from_numpy(result)
