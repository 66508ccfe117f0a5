"""A straightforward per-node Python loop implementation of node backtracking (Gandikota & Mishra, Algorithms
1–3).

Used two ways: as an independent check of the vectorised :class:`captum_ext.NodeBacktrack` (the tests compare
both on random VGG-style nets) and as the "per-node loop" baseline of the speed benchmark. It handles
``nn.Sequential`` stacks of Conv2d (square kernel, stride 1, dilation 1, groups 1, equal zero padding), ReLU and
the other element-wise activations of :data:`PASS_THROUGH`, Dropout, MaxPool2d, Flatten and Linear only; other
layers or convolution settings raise ``NotImplementedError``.
"""
from __future__ import annotations

from typing import Dict, Tuple

import torch
from torch import Tensor, nn

#: Layers whose output node depends on the same node of their input only: a path passes them unchanged.
PASS_THROUGH = (nn.ReLU, nn.Dropout, nn.Sigmoid, nn.Tanh, nn.SiLU, nn.Hardswish, nn.Hardsigmoid, nn.GELU, nn.Mish)


@torch.no_grad()
def backtrack_loop(model: nn.Sequential, image: Tensor, target: int, fc_rule: str = "positive",
                   conv_rule: str = "max", spatial_fc_rule: str = "argmax", fc_top_n: int = 5,
                   spatial_fc_top_n: int = 10, conv_top_n: int = 5, deduplicate: bool = True) -> Tensor:
    """Node backtracking for one image, one node at a time (rules and defaults as :class:`~captum_ext.NodeBacktrack`).

    Args:
        model (nn.Sequential): Conv2d (square kernel, stride 1, dilation 1, groups 1, equal zero padding),
            element-wise activations (:data:`PASS_THROUGH`), Dropout, MaxPool2d, Flatten and Linear layers.
        image (Tensor): ``1×C×H×W``.
        target (int): the output node to start from.
        fc_rule (str, optional): ``"positive"`` or ``"top_n"`` for a linear layer fed by a vector.
            Default: ``"positive"``.
        conv_rule (str, optional): ``"max"``, ``"top_n"`` or ``"positive"``. Default: ``"max"``.
        spatial_fc_rule (str, optional): ``"argmax"``, ``"positive"`` or ``"top_n"`` for a linear layer fed by a
            flattened spatial map. Default: ``"argmax"``.
        fc_top_n, spatial_fc_top_n, conv_top_n (int, optional): ``n`` of each ``"top_n"`` rule. Defaults: 5, 10, 5.
        deduplicate (bool, optional): collapse repeated nodes per layer. Default: True.

    Returns:
        Tensor: hits shaped like ``image``: how many backtracked paths end at each input element.

    Raises:
        NotImplementedError: a convolution with a non-square kernel, stride, dilation, groups or unequal padding.
    """

    def strongest(values: list, rule: str, top_n: int = 1) -> list:
        """Indices kept by a rule from contributions (ties to the lower index)."""
        order = sorted(range(len(values)), key=lambda i: (-values[i], i))
        if rule in ("max", "argmax"):
            return order[:1]
        positive = [i for i in order if values[i] > 0]
        return positive[:top_n] if rule == "top_n" else positive

    for layer in model:
        if isinstance(layer, nn.Conv2d) and (
                layer.kernel_size[0] != layer.kernel_size[1] or layer.stride != (1, 1) or layer.dilation != (1, 1)
                or layer.groups != 1 or isinstance(layer.padding, str) or layer.padding[0] != layer.padding[1]
                or layer.padding_mode != "zeros"):
            raise NotImplementedError(f"the reference loop handles square stride-1 convolutions without dilation or "
                                      f"groups and with equal zero padding, got {layer}")
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
            if isinstance(layer, PASS_THROUGH):
                add(node, count)
            elif isinstance(layer, nn.Flatten):
                add(tuple(int(v) for v in torch.unravel_index(torch.tensor(node[0]), a.shape)), count)
            elif isinstance(layer, nn.Linear):
                contrib = a * layer.weight[node[0]]
                source = index - 1  # look through activations and dropout for a flatten of a spatial map
                while source > 0 and isinstance(model[source], PASS_THROUGH):
                    source -= 1
                spatial = a.dim() == 1 and isinstance(model[source], nn.Flatten) and \
                    acts[source][0].numel() > 1  # a C×H×W map with H·W > 1
                rule, n = (spatial_fc_rule, spatial_fc_top_n) if spatial else (fc_rule, fc_top_n)
                for j in strongest(contrib.tolist(), rule, n):
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
                for ci in strongest(sums, conv_rule, conv_top_n):
                    if bool(torch.isinf(windows[ci]).all()):
                        continue  # the window lies wholly in the padding: the path ends
                    best = int(windows[ci].argmax())
                    add((ci, y - pad + best // k, x - pad + best % k), count)
            else:
                raise NotImplementedError(type(layer).__name__)
        producer = model[index - 1] if index > 0 else None  # the layer whose output `arrived` selects from
        if producer is None or isinstance(producer, PASS_THROUGH + (nn.Flatten,)):
            kept = arrived  # the input, and pass-through ops, keep counts (as NodeBacktrack does)
        else:
            kept = {node: 1.0 for node in arrived} if deduplicate else arrived  # de-duplicate per layer
    hits = torch.zeros_like(image[0])
    for (c, y, x), count in kept.items():
        hits[c, y, x] += count
    return hits[None]
