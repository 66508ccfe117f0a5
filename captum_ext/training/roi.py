"""Training and ROI-size-binned evaluation of :class:`~captum_ext.ROIAttentionResNet` on the ``"roi"`` digit
scenes, and the train-and-record run behind ``captum-ext train-roi``.

The ROI scenes (:func:`captum_ext.datasets.scenes.make_scenes` with ``mode="roi"``) give a normalisable image, the
ROI mask selecting one digit, its class, and the ROI pixel count; :func:`evaluate` bins accuracy by that count with
:func:`captum_ext.metrics.binned_accuracy` (the layout of Eppel's Tables 1–4, bins
:data:`~captum_ext.datasets.scenes.ROI_BINS_64` for 64×64).
"""
from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, Dict, List, NamedTuple, Optional, Sequence, Union

import torch
import torch.nn.functional as F
import torchvision
from torch import Tensor

from captum_ext._utils.checkpoints import read_state_dict
from captum_ext import metrics
from captum_ext._utils.training import check_replaceable_run, record_json, train_epochs
from captum_ext._utils.validation import check_scalar
from captum_ext.datasets.scenes import NUM_CLASSES, ROI_BINS_64, SceneBatch, make_scenes, normalize
from captum_ext.models.roi_attention_resnet import DEPTHS, ROIAttentionResNet

#: ``captum-ext train-roi`` defaults: epochs, training and held-out test scenes.
DEFAULT_EPOCHS = 8
DEFAULT_N_TRAIN = 8000
DEFAULT_N_TEST = 2000


def _check_roi(batch: SceneBatch) -> None:
    if batch.mode != "roi":
        raise ValueError(f"`batch` must come from make_scenes(mode='roi'), got mode {batch.mode!r}")


def fit(
    model: ROIAttentionResNet,
    batch: SceneBatch,
    epochs: int,
    batch_size: int = 64,
    lr: float = 2e-3,
    seed: int = 0,
    show_progress: bool = True,
    checkpoint: Optional[Union[str, Path]] = None,
    branch_lr_scale: float = 1.0,
) -> List[Dict[str, float]]:
    """Train with cross-entropy on ROI scenes (AdamW, one-cycle schedule, seeded); returns per-epoch mean loss.

    Args:
        model (ROIAttentionResNet): the network (any merge/mode/hard variant); it is left in eval mode.
        batch (SceneBatch): ROI scenes; images are normalised with :func:`captum_ext.datasets.scenes.normalize`.
        epochs (int): passes over ``batch``.
        batch_size (int, optional): scenes per optimisation step. Default: 64.
        lr (float, optional): peak learning rate of the one-cycle schedule. Default: 2e-3.
        seed (int, optional): seeds Python, numpy and torch, and the shuffling. Default: 0.
        show_progress (bool, optional): show a progress bar. Default: True.
        checkpoint (str or Path, optional): if given, the ``state_dict`` is saved there after every epoch.
            Default: None.
        branch_lr_scale (float, optional): peak learning rate of the mask branch (``model.branches``) as a
            multiple of ``lr``. When fine-tuning a pretrained backbone, the branch is new and starts as an exact
            identity, so it may need a larger rate than the pretrained layers (e.g. 10). Default: 1.0 (one rate).

    Returns:
        list of dict: one dict per epoch, ``{"total": mean cross-entropy over the epoch's scenes}``.

    Raises:
        ValueError: if ``batch`` does not come from ``make_scenes(mode="roi")``, ``epochs`` or ``batch_size``
            is below 1, ``lr`` or ``branch_lr_scale`` is not a finite number > 0, ``branch_lr_scale`` is not 1
            for a hard baseline (no branch), or a label is outside the model's classes.

    Example::

        >>> from captum_ext.datasets import scenes
        >>> from captum_ext.training import roi
        >>> net = roi.build_model(18)
        >>> history = roi.fit(net, scenes.make_scenes(8, mode="roi", seed=0), epochs=1, batch_size=8,
        ...                   branch_lr_scale=10.0, show_progress=False)
        >>> len(history), net.training
        (1, False)
    """
    _check_roi(batch)
    if (isinstance(branch_lr_scale, bool) or not isinstance(branch_lr_scale, (int, float))
            or not math.isfinite(branch_lr_scale) or branch_lr_scale <= 0):
        raise ValueError(f"`branch_lr_scale` must be a positive number (finite), got {branch_lr_scale!r}")
    if len(batch) and int(batch.labels.max()) >= model.backbone.fc.out_features:
        raise ValueError(f"`batch` holds label {int(batch.labels.max())}, outside the model's "
                         f"{model.backbone.fc.out_features} classes")
    if branch_lr_scale != 1 and not len(model.branches):
        raise ValueError(f"`branch_lr_scale` must be 1 for a model without a mask branch (hard={model.hard!r}), "
                         f"got {branch_lr_scale!r}")
    images = normalize(batch.images)
    masks = batch.masks.float()

    def batch_loss(index: Tensor) -> Dict[str, Tensor]:
        loss = F.cross_entropy(model(images[index], masks[index]), batch.labels[index])
        return {"total": loss}

    return train_epochs(model, len(batch), batch_loss, epochs, batch_size=batch_size, lr=lr, seed=seed,
                        show_progress=show_progress, desc=f"ROI {model.merge}/{model.mode}/{model.hard}",
                        checkpoint=checkpoint,
                        lr_scales={"branches.": float(branch_lr_scale)} if branch_lr_scale != 1 else None)


@torch.no_grad()
def predict(model: ROIAttentionResNet, batch: SceneBatch, batch_size: int = 256) -> Tensor:
    """Logits ``N×C`` in eval mode, in batches.

    Gradients are not tracked; the images are normalised with :func:`captum_ext.datasets.scenes.normalize` and
    the ROI masks passed as float.

    Args:
        model (ROIAttentionResNet): the network; it is switched to (and left in) eval mode, and must be on the CPU,
            where the batch's tensors are.
        batch (SceneBatch): ROI scenes from ``make_scenes(mode="roi")``, images in ``[0, 1]`` (not normalised).
        batch_size (int, optional): scenes per forward pass. Default: 256.

    Returns:
        Tensor: ``N×C`` logits, ``C = num_classes`` of ``model``.

    Raises:
        ValueError: if ``batch`` does not come from ``make_scenes(mode="roi")`` or holds no scene, or
            ``batch_size`` is not an integer >= 1.
    """
    _check_roi(batch)
    batch_size = int(check_scalar(batch_size, "batch_size", low=1, integer=True))
    if len(batch) == 0:
        raise ValueError("`batch` holds no scene to predict")
    model.eval()
    images, masks = normalize(batch.images), batch.masks.float()
    return torch.cat([model(images[i : i + batch_size], masks[i : i + batch_size])
                      for i in range(0, len(batch), batch_size)])


def evaluate(model: ROIAttentionResNet, batch: SceneBatch,
             bin_edges: Sequence[int] = ROI_BINS_64) -> metrics.BinnedAccuracy:
    """Accuracy binned by ROI size (class-mean and per-image), :func:`captum_ext.metrics.binned_accuracy`.

    Args:
        model (ROIAttentionResNet): the network (put in eval mode).
        batch (SceneBatch): ROI scenes from ``make_scenes(mode="roi")``.
        bin_edges (sequence of int, optional): ROI pixel-count bin edges. Default: :data:`ROI_BINS_64`.

    Returns:
        BinnedAccuracy: per-bin counts, class-mean and per-image accuracy, and the overall values.

    Example::

        >>> import torch
        >>> from captum_ext import ROIAttentionResNet
        >>> from captum_ext.datasets import scenes
        >>> from captum_ext.training import roi
        >>> batch = scenes.make_scenes(16, mode="roi", seed=0)
        >>> net = ROIAttentionResNet(num_classes=10, depth=18)
        >>> history = roi.fit(net, batch, epochs=1, batch_size=8, show_progress=False)
        >>> int(roi.evaluate(net, batch).counts.sum())
        16
    """
    logits = predict(model, batch)
    # With the model's class count, a label it cannot predict is refused rather than counted as a miss.
    return metrics.binned_accuracy(logits, batch.labels, batch.roi_sizes, bin_edges=bin_edges,
                                   num_classes=logits.shape[1])


def variant_name(merge: str = "first", mode: str = "add", hard: Optional[str] = None) -> str:
    """The file stem of a trained variant: ``roi_{merge}_{mode}``, or ``roi_{hard}`` for a hard baseline.

    Args:
        merge (str, optional): the merge point of the attention branch. Default: ``"first"``.
        mode (str, optional): ``"add"`` or ``"mul"``. Default: ``"add"``.
        hard (str, optional): ``"image"`` or ``"first"`` for the hard baselines. Default: None.

    Returns:
        str: e.g. ``"roi_first_add"`` or ``"roi_image"``.
    """
    return f"roi_{hard}" if hard else f"roi_{merge}_{mode}"


def build_model(
    depth: int = 18,
    merge: str = "first",
    mode: str = "add",
    hard: Optional[str] = None,
    backbone_weights: Optional[Union[str, Path]] = None,
    num_classes: int = NUM_CLASSES,
) -> ROIAttentionResNet:
    """A ROIAttentionResNet around a torchvision ResNet, optionally starting from a saved backbone.

    The backbone is built with ``weights=None`` (torch's global random generator initialises it: seed it first for
    a reproducible start) and, if given, loaded from ``backbone_weights``.

    Args:
        depth (int, optional): ResNet depth, one of :data:`~captum_ext.models.roi_attention_resnet.DEPTHS`.
            Default: 18.
        merge (str, optional): merge point of the attention branch. Default: ``"first"``.
        mode (str, optional): ``"add"`` or ``"mul"``. Default: ``"add"``.
        hard (str, optional): ``"image"`` or ``"first"`` for the hard baselines. Default: None.
        backbone_weights (str or Path, optional): a ``state_dict`` of a torchvision ResNet of this depth, e.g. one
            pretrained on whole scenes; one whose ``fc`` has another number of classes (ImageNet's 1000) gives its
            features, and the ``num_classes`` head starts at random. Default: None (random initialisation).
        num_classes (int, optional): classes of the backbone's ``fc``. Default: 10.

    Returns:
        ROIAttentionResNet: the network, in train mode.

    Raises:
        ValueError: if ``depth``, ``merge``, ``mode`` or ``hard`` is not a valid choice.
        FileNotFoundError: if ``backbone_weights`` does not exist.
        ValueError: ``backbone_weights`` is not a readable state dict of that ResNet.
    """
    if depth not in DEPTHS:
        raise ValueError(f"`depth` must be one of {DEPTHS}, got {depth!r}")
    backbone = getattr(torchvision.models, f"resnet{depth}")(weights=None, num_classes=num_classes)
    if backbone_weights is not None:
        path = Path(backbone_weights)
        if path.is_dir() or not path.is_file():
            raise FileNotFoundError(f"`backbone_weights` file {str(path)!r} does not exist"
                                    + (" (it is a folder)" if path.is_dir() else ""))
        state = read_state_dict(path, f"torchvision.models.resnet{depth}", "backbone_weights")
        head = state.get("fc.weight")
        if isinstance(head, torch.Tensor) and head.dim() == 2 and head.shape[0] != num_classes:
            # Another task's classifier (ImageNet's 1000 classes): the features load, the new head starts afresh.
            state = {key: value for key, value in state.items() if not str(key).startswith("fc.")}
            state.update({f"fc.{key}": value for key, value in backbone.fc.state_dict().items()})
        try:
            backbone.load_state_dict(state)
        except RuntimeError as err:
            # A train-roi checkpoint holds the whole ROIAttentionResNet, its ResNet under "backbone.".
            whole = any(str(key).startswith("backbone.") for key in state)
            hint = ("it holds a whole ROIAttentionResNet (keys 'backbone.…'), not a plain ResNet" if whole else
                    " ".join(str(err).split())[:300])
            raise ValueError(f"`backbone_weights` {str(path)!r} does not fit torchvision's resnet{depth} with "
                             f"{num_classes} classes: {hint}") from None
    return ROIAttentionResNet(backbone=backbone, merge=merge, mode=mode, hard=hard)


class RoiRun(NamedTuple):
    """What :func:`train_and_record` returns: the JSON record it wrote and the binned accuracy on the test set."""

    record: Dict[str, Any]
    result: metrics.BinnedAccuracy


def train_and_record(
    out_dir: Union[str, Path],
    depth: int = 18,
    merge: str = "first",
    mode: str = "add",
    hard: Optional[str] = None,
    backbone_weights: Optional[Union[str, Path]] = None,
    epochs: int = DEFAULT_EPOCHS,
    n_train: int = DEFAULT_N_TRAIN,
    n_test: int = DEFAULT_N_TEST,
    seed: int = 0,
    show_progress: bool = True,
    batch_size: int = 64,
    lr: float = 2e-3,
) -> RoiRun:
    """Train one variant on fresh ROI scenes, score it by ROI size on held-out scenes, save weights and record.

    Files under ``out_dir`` (created if needed), named by :func:`variant_name`: ``<variant>.pt`` (the
    ``state_dict``, rewritten after every epoch) and ``<variant>.json`` (settings, time, loss and the binned
    accuracy). Training scenes use ``seed`` (train-split digits), test scenes ``seed + 1`` (test split).

    Args:
        out_dir (str or Path): output folder.
        depth, merge, mode, hard, backbone_weights: the network, as in :func:`build_model`.
        epochs (int, optional): training epochs. Default: 8.
        n_train (int, optional): training scenes. Default: 8000.
        n_test (int, optional): held-out test scenes. Default: 2000.
        seed (int, optional): seeds the initialisation (``torch.manual_seed``), the data and the training loop.
            Default: 0.
        show_progress (bool, optional): show a progress bar. Default: True.
        batch_size (int, optional): scenes per optimisation step. Default: 64.
        lr (float, optional): peak learning rate (:func:`fit`). Default: 2e-3.

    Returns:
        RoiRun: ``record`` — the dict written to ``<variant>.json``: ``"variant"``, ``"depth"``, ``"backbone"``,
        ``"epochs"``, ``"n_train"``, ``"n_test"``, ``"batch_size"``, ``"lr"``, ``"seed"``, ``"train_seconds"``,
        ``"final_loss"``, ``"loss"`` (per-epoch mean), ``"overall_per_image"``, ``"overall_class_mean"``, ``"bins"``,
        ``"per_image"``, ``"class_mean"`` and
        ``"counts"`` — and ``result``, the :class:`~captum_ext.metrics.BinnedAccuracy` on the test scenes.

    Raises:
        ValueError: if an architecture argument is not a valid choice, ``epochs``, ``n_train``, ``n_test`` or
            ``batch_size`` is below 1, ``lr`` is not a finite number > 0 or ``seed`` not an integer >= 0.
        FileNotFoundError: if ``backbone_weights`` does not exist.
        ValueError: ``out_dir`` holds this variant trained with other settings (its files would be replaced).
    """
    for name, value in (("epochs", epochs), ("n_train", n_train), ("n_test", n_test), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"`{name}` must be a positive int, got {value!r}")
    lr = check_scalar(lr, "lr", low=0.0, low_open=True)  # before the model and data are built
    seed = int(check_scalar(seed, "seed", low=0, integer=True))
    torch.manual_seed(seed)
    model = build_model(depth, merge, mode, hard, backbone_weights)
    train = make_scenes(n_train, mode="roi", split="train", seed=seed)
    test = make_scenes(n_test, mode="roi", split="test", seed=seed + 1)
    variant = variant_name(merge, mode, hard)
    out = Path(out_dir)
    check_replaceable_run(out / f"{variant}.json", {
        "depth": depth, "backbone": str(backbone_weights) if backbone_weights else None, "epochs": epochs,
        "n_train": n_train, "n_test": n_test, "batch_size": batch_size, "lr": lr, "seed": seed})
    out.mkdir(parents=True, exist_ok=True)
    start = time.time()
    history = fit(model, train, epochs=epochs, batch_size=batch_size, lr=lr, seed=seed,
                  show_progress=show_progress, checkpoint=out / f"{variant}.pt")
    train_seconds = time.time() - start  # training only: the test scenes' evaluation is not part of it
    result = evaluate(model, test)
    record = {"variant": variant, "depth": depth, "backbone": str(backbone_weights) if backbone_weights else None,
              "epochs": epochs, "n_train": n_train, "n_test": n_test, "batch_size": batch_size, "lr": lr,
              "seed": seed, "train_seconds": train_seconds, "final_loss": history[-1]["total"],
              "loss": [epoch["total"] for epoch in history],
              "overall_per_image": result.overall_per_image, "overall_class_mean": result.overall_class_mean,
              "bins": result.edges.tolist(), "per_image": result.per_image.tolist(),
              "class_mean": result.class_mean.tolist(), "counts": result.counts.tolist()}
    (out / f"{variant}.json").write_text(record_json(record))
    return RoiRun(record, result)
