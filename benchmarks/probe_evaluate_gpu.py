"""GPU probe: ``evaluate`` end to end on CUDA (224² multi-object scenes exported to COCO, a random-weight
ResNet-50), against the bare method over the same images in the same run; with all localisation metrics and with
the two cheapest only. Needs a GPU.

    N_IMAGES=128 RESULTS_DIR=out/ python benchmarks/probe_evaluate_gpu.py
"""
import json, os, shutil, time
import torch, torchvision
from captum_ext.datasets import make_scenes, export_coco
from captum_ext.evaluation import evaluate
from captum_ext.evaluation.methods import build_method

out = os.environ.get("RESULTS_DIR", ".")
N = int(os.environ.get("N_IMAGES", "256"))
t0 = time.perf_counter()
batch = make_scenes(N, mode="multi", split="test", seed=7, size=224)
shutil.rmtree("/tmp/coco224", ignore_errors=True)  # an export refuses to overwrite another one's files
ann, imgs = export_coco(batch, "/tmp/coco224")
res = {"images": N, "export_s": time.perf_counter() - t0}
torch.manual_seed(0)
model = torchvision.models.resnet50(weights=None).eval()
x = batch.images.cuda()
for method in ("saliency", "grad_cam", "node_backtrack"):
    fn = build_method(method, model.cuda(), layer="layer4" if method == "grad_cam" else None)
    fn(x[:32], torch.zeros(32, dtype=torch.long, device="cuda")); torch.cuda.synchronize()
    s = time.perf_counter()
    pairs = 0
    for i in range(0, N, 32):
        xb = x[i:i + 32]
        for k in range(3):  # about as many pairs as the multi scenes hold
            fn(xb, torch.full((len(xb),), k, dtype=torch.long, device="cuda"))
            pairs += len(xb)
    torch.cuda.synchronize()
    bare = (time.perf_counter() - s) / pairs
    row = {"bare_s_per_pair": bare}
    for label, metrics in (("all_metrics", None), ("pg_energy_only", ["pointing_game", "energy_pointing_game"])):
        d = f"/tmp/ev_{method}_{label}"
        shutil.rmtree(d, ignore_errors=True)
        s = time.perf_counter()
        r = evaluate(model, method, f"coco:{ann}:{imgs}", d, batch_size=32, device="cuda", show_progress=False,
                     metrics=metrics, layer="layer4" if method == "grad_cam" else None, num_workers=4)
        wall = time.perf_counter() - s
        row[label] = {"wall_s": wall, "n_pairs": r.get("n_pairs"), "s_per_pair": wall / max(1, r.get("n_pairs") or 1),
                      "pointing_game": r.get("pointing_game")}
    res[method] = row
    print(method, json.dumps(row), flush=True)
json.dump(res, open(os.path.join(out, "evaluate_gpu.json"), "w"), indent=1)
