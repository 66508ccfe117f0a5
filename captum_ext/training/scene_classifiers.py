"""Training of the zoo's scene classifiers, reproducibly, on CPU (``scripts/train_zoo.py`` calls this).

Two stages. (1) *Digit-crop pretraining* (:func:`captum_ext.training.crops.pretrain_on_digit_crops`): the
backbone with a temporary global-average-pool + linear head learns to read digits on 32×32 crops centred (±4 px)
on the digits of training scenes; without it, scene training sits at chance for tens of thousands of samples.
(2) *Scene training*: the whole net on full scenes of its mode (softmax cross-entropy, or multi-label BCE).

VGG-style nets train with BatchNorm after every conv and ship with it folded into the convs
(:func:`captum_ext.zoo.vgg.without_batch_norm`), so the shipped nets are plain conv/ReLU/max-pool stacks.

Every epoch draws new training scenes (train-split digits, seed = 1000 · seed + epoch), so the nets never see the
same scene twice; held-out metrics are measured on test-split digits (instances never seen in training) with a
seed no training epoch uses, :data:`HELD_OUT_SEED`.
"""
from __future__ import annotations

import platform
import time
from pathlib import Path
from typing import Any, Dict, List, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from captum_ext import zoo
from captum_ext._utils.training import optimisation_steps, record_json
from captum_ext._utils.validation import check_scalar
from captum_ext._version import __version__
from captum_ext.datasets import scenes
from captum_ext.training.crops import pretrain_on_digit_crops, smoothed_loss
from captum_ext.zoo.vgg import SceneVGG, SceneVGGFCN, without_batch_norm

#: Seed and number of the held-out test-split scenes every record reports (the first 500 are scored per epoch).
HELD_OUT_SEED = 20_000
HELD_OUT_SCENES = 2000
#: ``scripts/train_zoo.py`` defaults: scene epochs, fresh scenes per epoch, digit-crop pretraining steps.
DEFAULT_EPOCHS = 6
DEFAULT_SCENES_PER_EPOCH = 8000
DEFAULT_PRETRAIN_STEPS = 400
#: Scenes whose digits are cropped for the pretraining stage.
PRETRAIN_SCENES = 8000


@torch.no_grad()
def held_out_metrics(model: nn.Module, batch: scenes.SceneBatch, multilabel: bool) -> Dict[str, float]:
    """Held-out metrics of a scene classifier, in eval mode (the model is left in eval mode).

    Args:
        model (nn.Module): the classifier of normalised 64×64 scenes.
        batch (SceneBatch): the scenes (images in ``[0, 1]``; normalised here).
        multilabel (bool): score as a multi-label classifier.

    Returns:
        dict: ``{"accuracy"}`` for a single-label model; ``{"mAP", "exact_set_accuracy", "label_accuracy@0.5"}``
        for a multi-label one (macro average precision; whether the top-``k`` classes are exactly the ``k`` true
        labels; per-label accuracy of ``logit > 0``).
    """
    from sklearn.metrics import average_precision_score

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


def _scene_entry(name: str) -> zoo.ZooEntry:
    if name not in zoo.available(zoo.SCENE_CLASSIFIER):
        raise ValueError(f"`name` must be one of {zoo.available(zoo.SCENE_CLASSIFIER)}, got {name!r}")
    return zoo.ZOO[name]


def trainable(name: str) -> nn.Module:
    """The net to train for a zoo scene classifier: its architecture, with BatchNorm for the VGG-style nets.

    Args:
        name (str): a scene classifier of the zoo (``zoo.available("scene_classifier")``).

    Returns:
        nn.Module: a freshly initialised network (torch's global random generator initialises it).

    Raises:
        ValueError: if ``name`` is not a zoo scene classifier.
    """
    build = _scene_entry(name).build
    return build(batch_norm=True) if build in (SceneVGG, SceneVGGFCN) else build()


def shipped(model: nn.Module) -> nn.Module:
    """The net to ship: BatchNorm folded into the convs for the VGG-style nets, the model itself otherwise.

    Args:
        model (nn.Module): a trained net from :func:`trainable`, in eval mode.

    Returns:
        nn.Module: a network with the zoo architecture's ``state_dict`` keys.
    """
    return without_batch_norm(model) if isinstance(model, (SceneVGG, SceneVGGFCN)) else model


def backbone(model: nn.Module) -> nn.Module:
    """The convolutional trunk of a zoo scene classifier (everything before its head), sharing its parameters.

    Args:
        model (nn.Module): a :class:`~captum_ext.zoo.SceneVGG`, :class:`~captum_ext.zoo.SceneVGGFCN` or
            :class:`~captum_ext.zoo.SceneResNet`.

    Returns:
        nn.Module: ``model.features``, or the ResNet's stem and stages as one ``nn.Sequential``.
    """
    if hasattr(model, "features"):
        return model.features
    return nn.Sequential(model.conv1, model.bn1, model.relu, model.layers)


def train_scene_classifier(
    name: str,
    out_dir: Union[str, Path],
    epochs: int = DEFAULT_EPOCHS,
    per_epoch: int = DEFAULT_SCENES_PER_EPOCH,
    batch_size: int = 64,
    lr: float = 2e-3,
    seed: int = 0,
    pretrain_steps: int = DEFAULT_PRETRAIN_STEPS,
    show_progress: bool = True,
) -> Dict[str, Any]:
    """Train a zoo scene classifier in two stages and write ``<out_dir>/<name>.pt`` and ``<name>.json``.

    Stage 1: ``pretrain_steps`` digit-crop steps at ``lr`` (skipped when 0). Stage 2: ``epochs`` epochs of
    ``per_epoch`` fresh scenes each, AdamW at peak ``lr / 2`` with a one-cycle schedule (10 % warm-up), held-out
    metrics on 500 scenes after every epoch (printed) and on all :data:`HELD_OUT_SCENES` at the end, after folding
    BatchNorm.

    Args:
        name (str): a scene classifier of the zoo, e.g. ``"scenes_vgg"``.
        out_dir (str or Path): output folder, created if needed (the zoo's weights folder to update the shipped
            weights).
        epochs (int, optional): scene-training epochs. Default: 6.
        per_epoch (int, optional): fresh training scenes per epoch. Default: 8000.
        batch_size (int, optional): scenes (or crops) per step. Default: 64.
        lr (float, optional): learning rate of the crop stage; the scene stage peaks at half of it. Default: 2e-3.
        seed (int, optional): seeds torch and numpy before the net is built, the crop jitter and draws, and the
            training scenes. Default: 0.
        pretrain_steps (int, optional): digit-crop steps (0: no pretraining). Default: 400.
        show_progress (bool, optional): show progress bars. Default: True.

    Returns:
        dict: the record written to ``<name>.json`` (the one :func:`captum_ext.zoo.info` returns for shipped
        weights): ``"name"``, ``"description"``, ``"scene_mode"``, ``"held_out"``, ``"training"``, ``"history"``,
        ``"versions"`` and ``"command"``.

    Raises:
        ValueError: if ``name`` is not a zoo scene classifier, ``epochs``, ``per_epoch`` or ``batch_size`` is
            below 1, ``lr`` is not a finite number > 0, or ``seed`` or ``pretrain_steps`` is negative.
        TypeError: ``lr``, ``seed`` or ``pretrain_steps`` of the wrong type (bools included).
    """
    entry = _scene_entry(name)
    for label, value in (("epochs", epochs), ("per_epoch", per_epoch), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"`{label}` must be a positive int, got {value!r}")
    # Before any work (the crop pretraining alone takes seconds to minutes).
    lr = check_scalar(lr, "lr", low=0.0, low_open=True)
    seed = int(check_scalar(seed, "seed", low=0, integer=True))
    pretrain_steps = int(check_scalar(pretrain_steps, "pretrain_steps", low=0, integer=True))
    torch.manual_seed(seed)
    np.random.seed(seed)
    model = trainable(name)
    start = time.time()
    pretrain_loss = None
    if pretrain_steps:
        crops_from = scenes.make_scenes(PRETRAIN_SCENES, mode="single", split="train", seed=seed * 1000 + 999)
        steps = pretrain_on_digit_crops(backbone(model), crops_from, steps=pretrain_steps, batch_size=batch_size,
                                        lr=lr, seed=seed, temporary_head=True, show_progress=show_progress)
        pretrain_loss = smoothed_loss(steps)
        print(f"  digit-crop pretraining: {pretrain_steps} steps, loss {pretrain_loss:.3f}", flush=True)
    held_out = scenes.make_scenes(HELD_OUT_SCENES, mode=entry.scene_mode, split="test", seed=HELD_OUT_SEED)
    history = _train_on_scenes(model, name, entry, held_out[:500], epochs, per_epoch, batch_size, lr / 2, seed,
                               show_progress)
    seconds = time.time() - start
    final_model = shipped(model.eval())
    final = held_out_metrics(final_model, held_out, entry.multilabel)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.save(final_model.state_dict(), out / f"{name}.pt")
    entry.build().load_state_dict(torch.load(out / f"{name}.pt", weights_only=True))  # ships as the zoo builds it
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
        "versions": {"captum_ext": __version__, "torch": torch.__version__, "python": platform.python_version()},
        "command": (
            f"python scripts/train_zoo.py --model {name} --epochs {epochs} --per-epoch {per_epoch} "
            f"--batch-size {batch_size} --lr {lr!r} --pretrain-steps {pretrain_steps} --seed {seed}"
        ),
    }
    (out / f"{name}.json").write_text(record_json(record))
    print(f"{name}: held-out {final} in {seconds:.0f}s -> {out / (name + '.pt')}", flush=True)
    return record


def _train_on_scenes(model: nn.Module, name: str, entry: zoo.ZooEntry, monitor: scenes.SceneBatch, epochs: int,
                     per_epoch: int, batch_size: int, lr: float, seed: int,
                     show_progress: bool) -> List[Dict[str, Any]]:
    """Stage 2: fresh scenes every epoch, one-cycle AdamW peaking at ``lr``; per-epoch loss and held-out metrics."""
    optimiser = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    total_steps = epochs * ((per_epoch + batch_size - 1) // batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=lr, total_steps=total_steps, pct_start=0.1)
    history: List[Dict[str, Any]] = []
    for epoch in range(epochs):
        data = scenes.make_scenes(per_epoch, mode=entry.scene_mode, split="train", seed=seed * 1000 + epoch)
        inputs = scenes.normalize(data.images)
        labels = data.targets if entry.multilabel else data.labels

        def scene_loss(index: Tensor) -> Dict[str, Tensor]:
            logits = model(inputs[index])
            if entry.multilabel:
                return {"total": F.binary_cross_entropy_with_logits(logits, labels[index])}
            return {"total": F.cross_entropy(logits, labels[index])}

        order = torch.randperm(len(data))
        batches = (order[i : i + batch_size] for i in range(0, len(data), batch_size))
        model.train()
        running = 0.0
        with tqdm(total=len(range(0, len(data), batch_size)), disable=not show_progress, leave=False,
                  desc=f"{name} epoch {epoch + 1}/{epochs}") as bar:
            for step, (_, parts) in enumerate(optimisation_steps(batches, scene_loss, optimiser, schedule)):
                running = parts["total"] if step == 0 else 0.9 * running + 0.1 * parts["total"]
                bar.update(1)
                bar.set_postfix(loss=f"{running:.3f}")
        scores = held_out_metrics(model, monitor, entry.multilabel)
        history.append({"epoch": epoch + 1, "loss": running, **scores})
        print(f"{name} epoch {epoch + 1}: loss {running:.4f} held-out(500) {scores}", flush=True)
    return history
