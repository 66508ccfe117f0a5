"""Boxes from saliency maps with the class-activation-map heuristic (Zhou et al. 2016)."""
from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage
from torch import Tensor

from captum_ext._utils.boxes import masks_to_boxes
from captum_ext._utils.validation import check_scalar
from captum_ext.metrics import _component_tree
from captum_ext.metrics._checks import TensorLike, check_maps, device_path

__all__ = ["boxes_from_saliency"]


def boxes_from_saliency(saliency: TensorLike, threshold: float = 0.2) -> Tensor:
    r"""Boxes from saliency maps with the CAM heuristic (Zhou et al., *Learning deep features for discriminative
    localization*, CVPR 2016).

    Per image: keep the pixels with ``S >= threshold · max(S)``, label their connected components with
    :func:`scipy.ndimage.label` using **8-connectivity** (diagonal neighbours connect), keep the component with the
    most pixels (ties: the one whose first pixel comes first in row-major order) and return its tight box. The
    largest component need not contain the global maximum. A map whose maximum is ``<= 0`` has no salient region
    and yields the full-image box ``(0, 0, W, H)``: this function *predicts* a box and takes no ground truth, so the
    package's empty-ground-truth rule does not apply; the full image is the uninformative answer a
    localisation metric such as :func:`corloc` then scores.

    Args:
        saliency (Tensor): ``N×H×W`` or ``N×1×H×W`` saliency maps.
        threshold (float, optional): fraction of each map's maximum, in ``[0, 1]``. Default: 0.2.

    Returns:
        Tensor: ``N×4`` float32 boxes ``(x1, y1, x2, y2)`` with exclusive right/bottom edges, on the saliency's
        device.

    Raises:
        TypeError: if ``saliency`` is not a real tensor / array or ``threshold`` is no number.
        ValueError: if ``saliency`` has the wrong shape or holds NaN/inf, or ``threshold`` is outside ``[0, 1]``.

    Example::

        >>> import torch
        >>> saliency = torch.zeros(1, 6, 8)
        >>> saliency[0, 0, 0] = 1.0            # the maximum, a single pixel
        >>> saliency[0, 2:5, 3:7] = 0.5        # a larger blob above 0.2 · max
        >>> boxes_from_saliency(saliency)
        tensor([[3., 2., 7., 5.]])
    """
    sal = check_maps(saliency, "saliency")
    frac = check_scalar(threshold, "threshold", low=0.0, high=1.0)
    if device_path(sal):  # maps on an accelerator are labelled there, with the same result
        from captum_ext.metrics._on_device import cam_boxes

        return cam_boxes(sal, frac)
    n, height, width = sal.shape
    values = sal.to(torch.float64).cpu()
    peak = values.flatten(1).amax(dim=1)
    keep = (values >= (frac * peak)[:, None, None]).numpy()
    if _component_tree.available():
        boxes = torch.from_numpy(_component_tree.largest_component_boxes(keep, torch.get_num_threads())).float()
        boxes[peak <= 0] = torch.tensor([0.0, 0.0, width, height])
        return boxes.to(sal.device)
    structure = np.ones((3, 3), dtype=bool)  # 8-connectivity
    component = np.zeros((n, height, width), dtype=bool)
    for i in range(n):
        if peak[i] <= 0:
            component[i] = True
            continue
        labelled, count = ndimage.label(keep[i], structure=structure)
        sizes = np.bincount(labelled.ravel(), minlength=count + 1)
        sizes[0] = 0
        component[i] = labelled == int(np.argmax(sizes))
    return masks_to_boxes(torch.from_numpy(component)).to(sal.device)
