"""Launch and synchronisation budget of the localisation metrics' device path, guarded on the CPU.

On a GPU every dispatched ATen op is a kernel launch paid on the host and every op whose output size or value the
host needs waits for the device. ``captum_ext.testing.count_ops`` counts both on CPU tensors, and they are the same
numbers on CUDA for the same code. The public metrics take the device path only for maps that are not on the CPU
(``sal.device.type != "cpu"`` in ``pointing.py``, ``cam.py`` and ``wsol.py``), so the batched device functions of
``captum_ext.metrics._on_device`` are called directly here, as ``tests/test_metrics_on_device.py`` does. The energy
pointing game and the PxAP histograms have no separate device path: the same tensor code runs on either device, so
it is measured as it is.

For each metric, a batch of 2 and a batch of 16 maps (32×32) are measured:

1. the op count must not grow with the batch (the two are equal for every metric);
2. the host synchronisations must not depend on the batch, and stay within the measured number + 2.

The component labelling (``_components.label_components``, used by CorLoc's CAM box and MaxBoxAccV2) loops until no
edge joins two trees, so its round count, hence its ops and syncs, depends on the maps' component structure. The
batches are therefore the same two maps repeated (planes are labelled independently, so a batch needs as many
rounds as its slowest plane, the same here for 2 and 16 maps).

``count_ops`` does not see device-to-host copies that are no-ops on the CPU: ``Tensor.tolist()``, ``.cpu()`` and
``.numpy()`` dispatch nothing for a CPU tensor, but each waits for the device on CUDA. They are counted here
separately, as host reads, by wrapping those three methods while a metric runs.
"""
from collections import Counter
from contextlib import contextmanager
from typing import Callable, Dict, Iterator, NamedTuple, Tuple

import pytest
import torch

from captum_ext._utils.boxes import boxes_to_masks
from captum_ext.metrics import (
    CorLocMetric,
    EnergyPointingGameMetric,
    MaxBoxAccV2Metric,
    PointingGameMetric,
    PxAPMetric,
    _checks,
    _on_device,
    wsol,
)
from captum_ext.metrics.ground_truth import GroundTruth
from captum_ext.metrics.pointing import energy_pointing_game
from captum_ext.testing import count_ops

SIZE = 32
SMALL, LARGE = 2, 16
#: MaxBoxAccV2's default sweep (``k / 100``) and PxAP's curve thresholds built from it.
SWEEP = torch.arange(100, dtype=torch.float64) / 100
CURVE = wsol._curve_thresholds(SWEEP)
#: Allowed synchronisations (and host reads) above the measured number.
HEADROOM = 2


def base_maps() -> Tuple[torch.Tensor, list, torch.Tensor]:
    """Two smooth random 32×32 maps (many components at high thresholds, one at low ones), their ground-truth
    boxes (one box for the first map, two for the second) and masks."""
    generator = torch.Generator().manual_seed(0)
    noise = torch.rand(2, 1, SIZE, SIZE, generator=generator)
    maps = torch.nn.functional.avg_pool2d(noise, 5, stride=1, padding=2)[:, 0]
    boxes = [torch.tensor([[4.0, 6.0, 15.0, 17.0]]), torch.tensor([[16.0, 2.0, 27.0, 13.0], [3.0, 20.0, 9.0, 30.0]])]
    masks = torch.stack([boxes_to_masks(b, SIZE, SIZE).any(dim=0) for b in boxes])
    return maps, boxes, masks


def batch(n: int) -> Tuple[torch.Tensor, list, torch.Tensor]:
    """The two base maps repeated to ``n`` maps (same component structure, so the same labelling rounds)."""
    maps, boxes, masks = base_maps()
    times = n // len(maps)
    return maps.repeat(times, 1, 1), boxes * times, masks.repeat(times, 1, 1)


METRICS: Dict[str, Callable[[torch.Tensor, list, torch.Tensor], object]] = {
    "pointing_game": lambda maps, boxes, masks: _on_device.pointing_hits(maps, masks, 2.0),
    "energy_pointing_game": lambda maps, boxes, masks: energy_pointing_game(maps, masks, reduce=False),
    "corloc_cam_box": lambda maps, boxes, masks: _on_device.cam_boxes(maps, 0.2),
    "maxboxacc_v2": lambda maps, boxes, masks: _on_device.iou_curves(maps, boxes, SWEEP),
    "pxap": lambda maps, boxes, masks: wsol._pxap_histograms(maps, masks, CURVE),
}

# Measured (torch 2.x, 32×32, batch 2 and 16 alike): (ops at batch 2, syncs, host reads). Why each sync exists:
#   pointing_game  22 ops, 0 syncs: argmax and a distance to every region pixel, all on the device.
#   energy          29 ops, 2 syncs: the input checks, `bool(...)` on the finite-values check of the maps and on the
#                   empty-mask check (check_tensor, check_nonempty_masks); the sums stay on the device.
#   corloc_cam_box 175 ops, 24 syncs: label_components: 8 boolean-mask indexings in _edges (2 per direction × 4),
#                   one `bool(apart.any())` per hooking round (3 rounds here) plus 2 boolean-mask indexings per
#                   round that continues (2 × 2), 1 `torch.equal` for the final compression; component_boxes: 3
#                   boolean-mask indexings + 1 `nonzero`; component_sizes: 1 boolean-mask indexing + 1 `bincount`;
#                   first_per_plane: 2 boolean-mask indexings. 8 + 3 + 4 + 1 + 4 + 2 + 2 = 24.
#   maxboxacc_v2   223 ops, 23 syncs: labelling (8 in _edges, 4 rounds: 4 `any` + 3 × 2 indexings, 1 `equal`),
#                   component_boxes (3 indexings + `nonzero`); every component's IoU with its own map's ground
#                   truth in one padded call (it was one IoU matrix per map: 258 ops at batch 2, 818 at 16).
#   pxap            28 ops, 4 syncs + 2 host reads: `bins[truth]`, `bins[~truth]` (boolean-mask indexing), their two
#                   `bincount`s, and the two `.cpu()` of the histograms (host reads), once per chunk of maps.
MEASURED = {
    "pointing_game": (22, 0, 0),
    "energy_pointing_game": (29, 2, 0),
    "corloc_cam_box": (175, 24, 0),
    "maxboxacc_v2": (223, 23, 0),
    "pxap": (28, 4, 2),
}
#: Metrics whose labelling loops (the structure of the maps must make it iterate more than once to be a test of it).
LABELLING = ("corloc_cam_box", "maxboxacc_v2")


class Measured(NamedTuple):
    ops: int
    syncs: int
    host_reads: int
    by_name: Counter
    syncs_by_name: Counter
    reads_by_name: Counter


@contextmanager
def counting_host_reads() -> Iterator[Counter]:
    """Count ``Tensor.tolist``, ``.cpu`` and ``.numpy`` calls (device-to-host copies on CUDA, invisible to
    ``count_ops`` on the CPU)."""
    reads: Counter = Counter()
    originals = {name: getattr(torch.Tensor, name) for name in ("tolist", "cpu", "numpy")}

    def wrap(name, original):
        def wrapper(self, *args, **kwargs):
            reads[name] += 1
            return original(self, *args, **kwargs)
        return wrapper

    try:
        for name, original in originals.items():
            setattr(torch.Tensor, name, wrap(name, original))
        yield reads
    finally:
        for name, original in originals.items():
            setattr(torch.Tensor, name, original)


def measure(name: str, n: int) -> Measured:
    maps, boxes, masks = batch(n)
    with counting_host_reads() as reads, count_ops() as counts:
        METRICS[name](maps, boxes, masks)
    return Measured(counts.total, counts.syncs, sum(reads.values()), counts.by_name, counts.syncs_by_name,
                    reads)


@pytest.fixture(scope="module")
def measured() -> Dict[Tuple[str, int], Measured]:
    return {(name, n): measure(name, n) for name in METRICS for n in (SMALL, LARGE)}


def test_the_batches_repeat_the_same_two_maps():
    maps, boxes, masks = batch(LARGE)
    assert maps.shape == (LARGE, SIZE, SIZE) and len(boxes) == LARGE and masks.shape == maps.shape
    assert torch.equal(maps[SMALL:2 * SMALL], maps[:SMALL]) and bool(masks.flatten(1).any(dim=1).all())


@pytest.mark.parametrize("name", list(METRICS))
def test_op_count_does_not_grow_with_the_batch(measured, name):
    small, large = measured[name, SMALL], measured[name, LARGE]
    assert large.ops == small.ops, (small.by_name, large.by_name)


@pytest.mark.parametrize("name", list(METRICS))
def test_host_synchronisations_are_few_and_do_not_depend_on_the_batch(measured, name):
    small, large = measured[name, SMALL], measured[name, LARGE]
    _, syncs, host_reads = MEASURED[name]
    assert large.syncs_by_name == small.syncs_by_name
    assert large.reads_by_name == small.reads_by_name
    assert small.syncs <= syncs + HEADROOM, small.syncs_by_name
    assert small.host_reads <= host_reads + HEADROOM, small.reads_by_name


@pytest.mark.parametrize("name", LABELLING)
def test_labelling_iterates_on_these_maps(measured, name):
    """Each hooking round ends with one ``bool(apart.any())``: more than one round, the loop is exercised, and the
    same number of rounds for both batches."""
    small, large = measured[name, SMALL], measured[name, LARGE]
    assert small.by_name["any"] >= 2
    assert large.by_name["any"] == small.by_name["any"]


# The streaming metrics' whole ``statistics`` call, checks and ground-truth regions included, on the accelerators'
# path (forced on the CPU): nothing is done pair by pair, so a batch of 16 pairs dispatches what a batch of 2 does,
# whether the maps come as one N×H×W tensor (as ``evaluate`` passes them) or as a list of H×W maps.
STREAMING = {
    "pointing_game": lambda: PointingGameMetric(3),
    "energy_pointing_game": EnergyPointingGameMetric,
    "corloc": CorLocMetric,
    "maxboxacc_v2": MaxBoxAccV2Metric,
    "pxap": PxAPMetric,
}
#: Synchronisations of a whole ``statistics`` call beyond the batched functions' own (``MEASURED``): the maps'
#: finiteness, the boxes' order, one emptiness read per size group, and the functional metric's own input checks.
STATISTICS_SYNCS = {"pointing_game": 6, "energy_pointing_game": 7, "corloc": 32, "maxboxacc_v2": 27, "pxap": 4}


def streaming_pairs(n: int, as_tensor: bool):
    maps, boxes, masks = batch(n)
    # Every other pair without a mask (its region is drawn from its boxes; PxAP skips it).
    truths = [GroundTruth(i % 3, boxes[i], masks[i] if i % 2 == 0 else None) for i in range(n)]
    return (maps if as_tensor else list(maps)), truths


@pytest.mark.parametrize("as_tensor", [True, False], ids=["tensor", "list"])
@pytest.mark.parametrize("name", list(STREAMING))
def test_streaming_statistics_do_not_grow_with_the_batch(monkeypatch, name, as_tensor):
    monkeypatch.setattr(_checks, "FORCE_DEVICE_PATH", True)
    measured = {}
    for n in (SMALL, LARGE):
        maps, truths = streaming_pairs(n, as_tensor)
        metric = STREAMING[name]()
        with counting_host_reads() as reads, count_ops() as counts:
            metric.statistics(maps, truths)
        measured[n] = counts.by_name, counts.syncs_by_name, reads
        if n == SMALL:
            assert counts.syncs <= STATISTICS_SYNCS[name] + HEADROOM, counts.syncs_by_name
    assert measured[LARGE] == measured[SMALL]
