"""Where the GPU MaxBoxAccV2 time goes (needs a GPU): the IoU curves per pair for several chunk sizes, and for 8
maps × 100 thresholds the time of the edge lists, the labelling and the boxes, the hooking rounds and the edges.

    OUT=results/ python benchmarks/profile_labels_gpu.py
"""
import json, os, sys, time
import torch
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_localisation_metrics import pairs
from captum_ext.metrics import _components as C, _on_device as D, wsol
from captum_ext._utils.maps import minmax_normalise
dev = torch.device("cuda")
maps, truths = pairs(64, 224)
x = torch.stack(maps).to(dev)
gt = [t.boxes.double() for t in truths]
sweep = wsol._check_thresholds(None)
res = {}
def t(fn, reps=3):
    fn(); torch.cuda.synchronize(); s = time.perf_counter()
    for _ in range(reps): fn()
    torch.cuda.synchronize(); return (time.perf_counter() - s) / reps
for bits in (24, 25, 26, 27, 28):
    D.PLANE_PIXELS = 1 << bits
    res[f"iou_curves_ms_per_pair_2^{bits}"] = 1000 * t(lambda: D.iou_curves(x, gt, sweep)) / 64
D.PLANE_PIXELS = 1 << 26
m = minmax_normalise(x[:8])
regions = (m.unsqueeze(1) >= sweep.to(dev).view(1, -1, 1, 1)).view(800, 224, 224)
res["edges_ms_8maps"] = 1000 * t(lambda: C._edges(regions))
res["label_ms_8maps"] = 1000 * t(lambda: C.label_components(regions))
L = C.label_components(regions)
res["boxes_ms_8maps"] = 1000 * t(lambda: C.component_boxes(L))
# rounds
here, there = C._edges(regions)
parent = torch.arange(regions.numel(), device=dev); rounds = 0
while here.numel():
    rounds += 1
    low, high = torch.minimum(parent[here], parent[there]), torch.maximum(parent[here], parent[there])
    parent.scatter_reduce_(0, high, low, "amin")
    for _ in range(C.ROUNDS_PER_CHECK): parent = parent[parent]
    apart = parent[here] != parent[there]
    if not bool(apart.any()): break
    here, there = here[apart], there[apart]
res["hooking_rounds_8maps"] = rounds
res["edges_8maps"] = int(C._edges(regions)[0].numel())
from captum_ext.metrics import EnergyPointingGameMetric
e = EnergyPointingGameMetric(); moved = [m_.to(dev) for m_ in maps]
res["energy_ms_per_pair"] = 1000 * t(lambda: e.statistics(moved, truths)) / 64
print(json.dumps(res, indent=1))
json.dump(res, open(os.path.join(os.environ.get("OUT", "."), "profile_labels.json"), "w"), indent=1)
