"""Train a captum_ext zoo model on freshly generated scenes, reproducibly, on CPU.

Two stages. (1) *Digit-crop pretraining*: the backbone with a temporary global-average-pool + linear head learns
to read digits on 32×32 crops centred (±4 px) on the digits of training scenes. Trained on whole 64×64 scenes
from scratch, every architecture we tried (plain VGG, VGG+BatchNorm, ResNet) sat at chance for the first
≈ 30,000 samples: the net must find the digit among photo structure and digit-like clutter before any gradient
tells it what a digit is. With the backbone pretrained on crops, scene training takes off at once.
(2) *Scene training*: the whole net on full scenes of its mode (softmax CE or multi-label BCE).

VGG-style nets train with BatchNorm after every conv and ship with it folded into the convs
(:func:`captum_ext.zoo.vgg.without_batch_norm`), so the shipped nets are plain conv/ReLU/max-pool stacks.

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
from torch import nn
from tqdm import tqdm

import captum_ext
from captum_ext import zoo
from captum_ext.datasets import scenes
from captum_ext.zoo.vgg import SceneVGG, SceneVGGFCN, without_batch_norm

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


def trainable(name: str) -> nn.Module:
    """The net to train: the zoo architecture, with BatchNorm for the VGG-style nets."""
    build = zoo.ZOO[name].build
    return build(batch_norm=True) if build in (SceneVGG, SceneVGGFCN) else build()


def shipped(model: nn.Module) -> nn.Module:
    """The net to ship: BatchNorm folded into the convs for the VGG-style nets."""
    return without_batch_norm(model) if isinstance(model, (SceneVGG, SceneVGGFCN)) else model


def backbone(model: nn.Module) -> nn.Module:
    """The convolutional trunk of a zoo net (everything before its head)."""
    if hasattr(model, "features"):
        return model.features
    return nn.Sequential(model.conv1, model.bn1, model.relu, model.layers)


def pretrain_on_crops(model: nn.Module, steps: int, batch_size: int, lr: float, seed: int) -> float:
    """Stage 1: backbone + temporary GAP/linear head on digit crops; returns the last smoothed loss."""
    data = scenes.make_scenes(8000, mode="single", split="train", seed=seed * 1000 + 999)
    generator = torch.Generator().manual_seed(seed)
    inputs, labels = scenes.digit_crops(data, jitter=4.0, generator=generator), data.labels
    trunk = backbone(model)
    with torch.no_grad():
        channels = trunk(inputs[:2]).shape[1]
    net = nn.Sequential(trunk, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, scenes.NUM_CLASSES))
    optimiser = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    net.train()
    running = float("nan")
    bar = tqdm(range(steps), desc="digit-crop pretraining", leave=False)
    for step in bar:
        idx = torch.randint(0, len(data), (batch_size,), generator=generator)
        loss = F.cross_entropy(net(inputs[idx]), labels[idx])
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        running = loss.item() if step == 0 else 0.95 * running + 0.05 * loss.item()
        bar.set_postfix(loss=f"{running:.3f}")
    print(f"  digit-crop pretraining: {steps} steps, loss {running:.3f}", flush=True)
    return running


def train(
    name: str, epochs: int, per_epoch: int, batch_size: int, lr: float, seed: int, pretrain_steps: int, out: Path
) -> Dict:
    entry = zoo.ZOO[name]
    torch.manual_seed(seed)
    np.random.seed(seed)
    model = trainable(name)
    start = time.time()
    pretrain_loss = pretrain_on_crops(model, pretrain_steps, batch_size, lr, seed) if pretrain_steps else None
    optimiser = torch.optim.AdamW(model.parameters(), lr=lr / 2, weight_decay=1e-4)
    steps = epochs * ((per_epoch + batch_size - 1) // batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=lr / 2, total_steps=steps, pct_start=0.1)
    held_out = scenes.make_scenes(2000, mode=entry.scene_mode, split="test", seed=HELD_OUT_SEED)
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
            running = loss.item() if i == 0 else 0.9 * running + 0.1 * loss.item()
            bar.set_postfix(loss=f"{running:.3f}")
        metrics = evaluate(model, held_out[:500], entry.multilabel)
        history.append({"epoch": epoch + 1, "loss": running, **metrics})
        print(f"{name} epoch {epoch + 1}: loss {running:.4f} held-out(500) {metrics}", flush=True)
    seconds = time.time() - start
    final_model = shipped(model.eval())
    final = evaluate(final_model, held_out, entry.multilabel)
    out.mkdir(parents=True, exist_ok=True)
    torch.save(final_model.state_dict(), out / f"{name}.pt")
    reloaded = zoo.ZOO[name].build()
    reloaded.load_state_dict(torch.load(out / f"{name}.pt", weights_only=True))
    record = {
        "name": name,
        "description": entry.description,
        "scene_mode": entry.scene_mode,
        "held_out": {"n": len(held_out), "split": "test", "seed": HELD_OUT_SEED, **final},
        "training": {
            "digit_crop_pretraining_steps": pretrain_steps, "pretraining_loss": pretrain_loss, "epochs": epochs,
            "scenes_per_epoch": per_epoch, "batch_size": batch_size, "lr": lr, "seed": seed,
            "optimizer": "AdamW (+ OneCycle for scene training)", "seconds": round(seconds, 1),
            "threads": torch.get_num_threads(),
        },
        "history": history,
        "versions": {
            "captum_ext": captum_ext.__version__, "torch": torch.__version__, "python": platform.python_version(),
        },
        "command": (
            f"python scripts/train_zoo.py --model {name} --epochs {epochs} --per-epoch {per_epoch} "
            f"--pretrain-steps {pretrain_steps} --seed {seed}"
        ),
    }
    (out / f"{name}.json").write_text(json.dumps(record, indent=2) + "\n")
    print(f"{name}: held-out {final} in {seconds:.0f}s -> {out / (name + '.pt')}", flush=True)
    return record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="all", help=f"one of {zoo.available()} or 'all'")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--per-epoch", type=int, default=8000, help="fresh training scenes per epoch")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--pretrain-steps", type=int, default=400, help="digit-crop pretraining steps (0: none)")
    parser.add_argument("--out", type=Path, default=zoo.WEIGHTS_DIR)
    args = parser.parse_args()
    names = zoo.available() if args.model == "all" else [args.model]
    for name in names:
        train(name, args.epochs, args.per_epoch, args.batch_size, args.lr, args.seed, args.pretrain_steps, args.out)


if __name__ == "__main__":
    main()
