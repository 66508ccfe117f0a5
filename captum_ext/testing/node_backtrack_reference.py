"""A straightforward per-node Python loop implementation of node backtracking (Gandikota & Mishra, Algorithms
1–3).

Used two ways: as an independent check of the vectorised :class:`captum_ext.NodeBacktrack` (the tests compare
both on random VGG-style nets) and as the "per-node loop" baseline of the speed benchmark. It handles
``nn.Sequential`` stacks of Conv2d (groups 1, zero padding), ReLU, Dropout, MaxPool2d, Flatten and Linear only.
"""
from __future__ import annotations

from typing import Dict, Tuple

import torch
from torch import Tensor, nn


@torch.no_grad()
def backtrack_loop(model: nn.Sequential, image: Tensor, target: int, fc_rule: str = "positive",
                   conv_rule: str = "max") -> Tensor:
    """Node backtracking for one image, one node at a time.

    Args:
        model (nn.Sequential): Conv2d (groups 1, zero padding), ReLU, Dropout, MaxPool2d, Flatten and Linear layers.
        image (Tensor): ``1×C×H×W``.
        target (int): the output node to start from.
        fc_rule (str, optional): only ``"positive"`` (every positive contribution) is implemented here.
            Default: ``"positive"``.
        conv_rule (str, optional): ``"max"`` or ``"positive"``. Default: ``"max"``.

    Returns:
        Tensor: hits shaped like ``image``: how many backtracked paths end at each input element.

    Raises:
        NotImplementedError: ``fc_rule="top_n"``.
    """
    acts = [image[0]]
    for layer in model:
        acts.append(layer(acts[-1][None].clone())[0])  # clone: in-place ReLUs must not overwrite stored values
    kept: Dict[Tuple[int, ...], float] = {(target,): 1.0}
    for index in reversed(range(len(model))):
        layer, a = model[index], acts[index]
        arrived: Dict[Tuple[int, ...], float] = {}

        def add(node: Tuple[int, ...], count: float) -> None:
            arrived[node] = arrived.get(node, 0.0) + count

        for node, count in kept.items():
            if isinstance(layer, (nn.ReLU, nn.Dropout)):
                add(node, count)
            elif isinstance(layer, nn.Flatten):
                add(tuple(int(v) for v in torch.unravel_index(torch.tensor(node[0]), a.shape)), count)
            elif isinstance(layer, nn.Linear):
                contrib = a * layer.weight[node[0]]
                source = index - 1  # look through dropout/ReLU for a flatten of a spatial map
                while source > 0 and isinstance(model[source], (nn.Dropout, nn.ReLU)):
                    source -= 1
                if a.dim() == 1 and isinstance(model[source], nn.Flatten) and \
                        acts[source][0].numel() > 1:  # a C×H×W map with H·W > 1
                    add((int(contrib.argmax()),), count)  # fed by a spatial map: one argmax
                    continue
                candidates = [j for j in range(a.shape[0]) if float(contrib[j]) > 0]
                if fc_rule == "top_n":
                    raise NotImplementedError("the reference implements the positive rule only")
                for j in candidates:
                    add((j,), count)
            elif isinstance(layer, nn.MaxPool2d):
                c, y, x = node
                k, s = layer.kernel_size, layer.stride
                window = a[c, y * s : y * s + k, x * s : x * s + k]
                best = int(window.argmax())
                add((c, y * s + best // window.shape[1], x * s + best % window.shape[1]), count)
            elif isinstance(layer, nn.Conv2d):
                c_out, y, x = node
                k, pad = layer.kernel_size[0], layer.padding[0]
                sums = []
                windows = []
                for ci in range(a.shape[0]):
                    window = torch.full((k, k), float("-inf"))
                    total = 0.0
                    for ky in range(k):
                        for kx in range(k):
                            iy, ix = y - pad + ky, x - pad + kx
                            if 0 <= iy < a.shape[1] and 0 <= ix < a.shape[2]:
                                value = float(a[ci, iy, ix] * layer.weight[c_out, ci, ky, kx])
                                window[ky, kx] = value
                                total += value
                    sums.append(total)
                    windows.append(window)
                channels = [max(range(len(sums)), key=lambda i: (sums[i], -i))] if conv_rule == "max" else \
                    [i for i, v in enumerate(sums) if v > 0]
                for ci in channels:
                    best = int(windows[ci].argmax())
                    add((ci, y - pad + best // k, x - pad + best % k), count)
            else:
                raise NotImplementedError(type(layer).__name__)
        producer = model[index - 1] if index > 0 else None  # the layer whose output `arrived` selects from
        if producer is None or isinstance(producer, (nn.ReLU, nn.Dropout, nn.Flatten)):
            kept = arrived  # the input, and pass-through ops, keep counts (as NodeBacktrack does)
        else:
            kept = {node: 1.0 for node in arrived}  # de-duplicate per layer
    hits = torch.zeros_like(image[0])
    for (c, y, x), count in kept.items():
        hits[c, y, x] += count
    return hits[None]
