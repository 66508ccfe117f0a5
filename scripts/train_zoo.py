"""Train a captum_ext zoo model on freshly generated scenes, reproducibly, on CPU.

Every epoch draws new training scenes (train-split digits, seed = base seed + epoch), so the nets never see the
same scene twice; held-out accuracy is measured on test-split digits (instances never seen in training) with a
seed no training epoch uses. Writes ``<out>/<name>.pt`` (state_dict) and ``<out>/<name>.json`` (the record
``captum_ext.zoo.info`` returns).

    python scripts/train_zoo.py --model scenes_vgg            # ≈ minutes on 2 CPU cores
    python scripts/train_zoo.py --model all --epochs 8
"""
from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path
from typing import Dict

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import average_precision_score
from tqdm import tqdm

import captum_ext
from captum_ext import zoo
from captum_ext.datasets import scenes

HELD_OUT_SEED = 20_000


@torch.no_grad()
def evaluate(model: torch.nn.Module, batch: scenes.SceneBatch, multilabel: bool) -> Dict[str, float]:
    """Held-out metrics: accuracy (single-label) or mAP / exact-set accuracy / per-label accuracy (multi-label)."""
    model.eval()
    logits = torch.cat([model(scenes.normalize(batch.images[i : i + 256])) for i in range(0, len(batch), 256)])
    if not multilabel:
        return {"accuracy": float((logits.argmax(1) == batch.labels).float().mean())}
    targets = batch.targets
    counts = targets.sum(1).long()
    ranked = logits.argsort(dim=1, descending=True)
    top_k = torch.zeros_like(targets)
    for k in counts.unique().tolist():  # the top-|labels| classes must be exactly the true set
        rows = counts == k
        top_k[rows] = torch.zeros_like(targets[rows]).scatter_(1, ranked[rows, :k], 1.0)
    return {
        "mAP": float(average_precision_score(targets.numpy(), logits.numpy(), average="macro")),
        "exact_set_accuracy": float((top_k == targets).all(1).float().mean()),
        "label_accuracy@0.5": float(((logits > 0) == targets.bool()).float().mean()),
    }


def train(name: str, epochs: int, per_epoch: int, batch_size: int, lr: float, seed: int, out: Path) -> Dict:
    entry = zoo.ZOO[name]
    torch.manual_seed(seed)
    np.random.seed(seed)
    model = entry.build()
    optimiser = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    steps = epochs * ((per_epoch + batch_size - 1) // batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=lr, total_steps=steps, pct_start=0.15)
    held_out = scenes.make_scenes(2000, mode=entry.scene_mode, split="test", seed=HELD_OUT_SEED)
    start = time.time()
    history = []
    for epoch in range(epochs):
        data = scenes.make_scenes(per_epoch, mode=entry.scene_mode, split="train", seed=seed * 1000 + epoch)
        inputs = scenes.normalize(data.images)
        labels = data.targets if entry.multilabel else data.labels
        order = torch.randperm(len(data))
        model.train()
        running = 0.0
        bar = tqdm(range(0, len(data), batch_size), desc=f"{name} epoch {epoch + 1}/{epochs}", leave=False)
        for i in bar:
            idx = order[i : i + batch_size]
            logits = model(inputs[idx])
            if entry.multilabel:
                loss = F.binary_cross_entropy_with_logits(logits, labels[idx])
            else:
                loss = F.cross_entropy(logits, labels[idx])
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            schedule.step()
            running = 0.9 * running + 0.1 * float(loss) if i else float(loss)
            bar.set_postfix(loss=f"{running:.3f}")
        metrics = evaluate(model, held_out[:500], entry.multilabel)
        history.append({"epoch": epoch + 1, "loss": running, **metrics})
        print(f"{name} epoch {epoch + 1}: loss {running:.4f} held-out(500) {metrics}", flush=True)
    seconds = time.time() - start
    final = evaluate(model, held_out, entry.multilabel)
    out.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), out / f"{name}.pt")
    record = {
        "name": name,
        "description": entry.description,
        "scene_mode": entry.scene_mode,
        "held_out": {"n": len(held_out), "split": "test", "seed": HELD_OUT_SEED, **final},
        "training": {
            "epochs": epochs, "scenes_per_epoch": per_epoch, "batch_size": batch_size, "lr": lr, "seed": seed,
            "optimizer": "AdamW + OneCycle", "seconds": round(seconds, 1), "threads": torch.get_num_threads(),
        },
        "history": history,
        "versions": {
            "captum_ext": captum_ext.__version__, "torch": torch.__version__, "python": platform.python_version(),
        },
        "command": f"python scripts/train_zoo.py --model {name} --epochs {epochs} --per-epoch {per_epoch} --seed {seed}",
    }
    (out / f"{name}.json").write_text(json.dumps(record, indent=2) + "\n")
    print(f"{name}: held-out {final} in {seconds:.0f}s -> {out / (name + '.pt')}", flush=True)
    return record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="all", help=f"one of {zoo.available()} or 'all'")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--per-epoch", type=int, default=10_000, help="fresh training scenes per epoch")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=zoo.WEIGHTS_DIR)
    args = parser.parse_args()
    names = zoo.available() if args.model == "all" else [args.model]
    for name in names:
        train(name, args.epochs, args.per_epoch, args.batch_size, args.lr, args.seed, args.out)


if __name__ == "__main__":
    main()
