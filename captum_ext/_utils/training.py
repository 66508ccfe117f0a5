"""A small, seeded training loop shared by the training harnesses (AdamW + one-cycle schedule, progress bar).

:func:`optimisation_steps` is the loop's core — loss, backward pass, optimiser and schedule step for each batch of
example indices — and every harness in :mod:`captum_ext.training` drives it: :func:`train_epochs` with shuffled
passes, the zoo recipe with fresh scenes per epoch or with batches drawn with replacement.
"""
from __future__ import annotations

import random
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Iterator, List, Mapping, Optional, Tuple, Union

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from captum_ext._utils.validation import check_scalar

#: Maps a ``LongTensor`` of example indices to a dict of scalar tensors; ``"total"`` is minimised.
BatchLoss = Callable[[Tensor], Mapping[str, Tensor]]


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, numpy and torch; return a torch generator seeded the same way (for shuffling).

    Args:
        seed (int): the seed.

    Returns:
        torch.Generator: a CPU generator seeded with ``seed``.
    """
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def optimisation_steps(
    batches: Iterable[Tensor],
    batch_loss: BatchLoss,
    optimizer: torch.optim.Optimizer,
    schedule: Optional[torch.optim.lr_scheduler.LRScheduler] = None,
) -> Iterator[Tuple[int, Dict[str, float]]]:
    """One optimisation step per batch of example indices; yields ``(batch size, loss parts as floats)``.

    The caller owns the model's train/eval mode, the sampling of ``batches``, logging and checkpoints; this is the
    step every harness shares, in one fixed order (loss, zero grad, backward, optimiser step, schedule step).

    Args:
        batches (iterable of Tensor): ``LongTensor`` s of example indices, consumed lazily (a generator may draw
            them from a random generator as it goes).
        batch_loss (callable): maps a batch of indices to a dict of scalar tensors; ``"total"`` is minimised.
        optimizer (torch.optim.Optimizer): the optimiser over the trained parameters.
        schedule (LRScheduler, optional): stepped after every optimiser step. Default: None (constant rate).

    Returns:
        iterator of (int, dict): per step, the number of examples and every loss part's value.
    """
    for index in batches:
        parts = batch_loss(index)
        optimizer.zero_grad(set_to_none=True)
        parts["total"].backward()
        optimizer.step()
        if schedule is not None:
            schedule.step()
        yield len(index), {key: float(value.detach()) for key, value in parts.items()}


def _parameter_groups(model: nn.Module, lr: float, lr_scales: Mapping[str, float]) -> List[Dict[str, Any]]:
    """Optimiser groups ``{"params", "lr"}``: one per prefix of ``lr_scales``, then one for the rest."""
    for prefix, scale in lr_scales.items():
        if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not scale > 0:
            raise ValueError(f"`lr_scales` values must be positive numbers, got {scale!r} for {prefix!r}")
    chosen: Dict[str, List[nn.Parameter]] = {prefix: [] for prefix in lr_scales}
    rest: List[nn.Parameter] = []
    for name, parameter in model.named_parameters():
        prefix = next((p for p in lr_scales if name.startswith(p)), None)
        (rest if prefix is None else chosen[prefix]).append(parameter)
    empty = [prefix for prefix, params in chosen.items() if not params]
    if empty:
        raise ValueError(f"`lr_scales` prefixes {empty} match no parameter of the model")
    groups = [{"params": params, "lr": lr * lr_scales[prefix]} for prefix, params in chosen.items()]
    # Without scales this is one group of model.parameters() in order: the optimiser behaves exactly as before.
    return groups + ([{"params": rest, "lr": lr}] if rest else [])


def train_epochs(
    model: nn.Module,
    n: int,
    batch_loss: BatchLoss,
    epochs: int,
    batch_size: int = 64,
    lr: float = 2e-3,
    weight_decay: float = 1e-4,
    seed: int = 0,
    show_progress: bool = True,
    desc: str = "training",
    checkpoint: Optional[Union[str, Path]] = None,
    lr_scales: Optional[Mapping[str, float]] = None,
) -> List[Dict[str, float]]:
    """Train ``model`` for ``epochs`` passes over ``n`` examples in shuffled mini-batches.

    Args:
        model (nn.Module): the module; it is put in train mode during the loop and in eval mode afterwards.
        n (int): number of training examples.
        batch_loss (callable): maps a ``LongTensor`` of example indices to a dict of scalar tensors whose
            ``"total"`` entry is minimised (the other entries are logged).
        epochs (int): passes over the examples.
        batch_size (int, optional): examples per step. Default: 64.
        lr (float, optional): peak learning rate of the one-cycle schedule (AdamW). Default: 2e-3.
        weight_decay (float, optional): AdamW weight decay. Default: 1e-4.
        seed (int, optional): seeds Python, numpy and torch, and the shuffling. Default: 0.
        show_progress (bool, optional): show a progress bar (one per run, with the running loss). Default: True.
        desc (str, optional): progress bar label. Default: ``"training"``.
        checkpoint (str or Path, optional): if given, the model's ``state_dict`` is saved there after every
            epoch. Default: None.
        lr_scales (mapping of str to float, optional): parameter-name prefix → multiple of ``lr`` for the
            parameters whose name (``model.named_parameters()``) starts with it, e.g. ``{"branches.": 10.0}`` to
            train layers newly added to a pretrained network faster than the pretrained ones. The first matching
            prefix wins; the other parameters use ``lr``. Default: None (one rate for all).

    Returns:
        list of dict: one dict per epoch with the mean of each logged part.

    Raises:
        TypeError: ``epochs``, ``batch_size`` or ``seed`` is not an integer (bools included), or a rate is not a
            number.
        ValueError: if ``epochs``, ``n`` or ``batch_size`` is below 1, ``lr`` is not a finite number > 0,
            ``weight_decay`` not a finite number >= 0, ``seed`` negative, or a scale in ``lr_scales`` is not a
            positive number or its prefix matches no parameter.
    """
    epochs = int(check_scalar(epochs, "epochs", low=1, integer=True))
    batch_size = int(check_scalar(batch_size, "batch_size", low=1, integer=True))
    # An infinite or NaN rate trained to NaN weights while the reported loss stayed finite.
    lr = check_scalar(lr, "lr", low=0.0, low_open=True)
    weight_decay = check_scalar(weight_decay, "weight_decay", low=0.0)
    seed = int(check_scalar(seed, "seed", low=0, integer=True))
    if n < 1:
        raise ValueError(f"there must be at least one training example, got {n}")
    groups = _parameter_groups(model, lr, lr_scales or {})
    generator = seed_everything(seed)
    steps_per_epoch = (n + batch_size - 1) // batch_size
    optimizer = torch.optim.AdamW(groups, lr=lr, weight_decay=weight_decay)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=[group["lr"] for group in groups],
                                                   total_steps=epochs * steps_per_epoch)
    history: List[Dict[str, float]] = []
    model.train()
    try:
        with tqdm(total=epochs * steps_per_epoch, disable=not show_progress, desc=desc) as bar:
            for epoch in range(epochs):
                order = torch.randperm(n, generator=generator)
                batches = (order[step * batch_size : (step + 1) * batch_size] for step in range(steps_per_epoch))
                sums: Dict[str, float] = {}
                for size, parts in optimisation_steps(batches, batch_loss, optimizer, schedule):
                    for key, value in parts.items():
                        sums[key] = sums.get(key, 0.0) + value * size
                    bar.update(1)
                    bar.set_postfix(epoch=epoch + 1, loss=f"{parts['total']:.4f}")
                history.append({key: value / n for key, value in sums.items()})
                if checkpoint is not None:
                    torch.save(model.state_dict(), checkpoint)
    finally:
        model.eval()
    return history


def record_json(record: Mapping[str, Any]) -> str:
    """A run record as standard JSON text: a value that is not a finite number (an empty bin's NaN accuracy) is
    ``null``, which strict parsers, jq and JavaScript read, where Python's ``NaN`` token is refused.

    Args:
        record (mapping): the record.

    Returns:
        str: indented JSON, ending with a newline.
    """
    import json
    import math

    def clean(value: Any) -> Any:
        if isinstance(value, float) and not math.isfinite(value):
            return None
        if isinstance(value, Mapping):
            return {key: clean(item) for key, item in value.items()}
        if isinstance(value, (list, tuple)):
            return [clean(item) for item in value]
        return value

    return json.dumps(clean(record), indent=2, allow_nan=False) + "\n"


def check_replaceable_run(record: Path, settings: Mapping[str, Any]) -> None:
    """Refuse to train into files that hold a run with other settings: its weights and record would be replaced
    (the weights after the first epoch already). A rerun with the same settings may replace them.

    Args:
        record (Path): the run's JSON record (its weights file sits beside it).
        settings (mapping): the new run's settings, as the record stores them.

    Returns:
        None

    Raises:
        ValueError: the record holds other values of some of ``settings`` (naming them), or is not readable.
    """
    import json

    weights = record.with_suffix(".pt")
    if not record.is_file():
        if weights.exists():  # a user's own file, or what a failed run left: either way not this run's to replace
            raise ValueError(f"{str(weights)!r} exists without a run record beside it: it would be replaced; move "
                             f"it, or use another folder")
        return
    try:
        stored = json.loads(record.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ValueError(f"{str(record)!r} is not a readable run record ({err}): move it, or use another folder") \
            from None
    if not isinstance(stored, dict):
        raise ValueError(f"{str(record)!r} is not a run record (it holds a JSON {type(stored).__name__}): move it, "
                         f"or use another folder")
    differ = [f"{key} {stored.get(key)!r} (this run: {value!r})" for key, value in settings.items()
              if stored.get(key) != value]
    if differ:
        raise ValueError(f"{str(record.parent)!r} already holds {record.with_suffix('.pt').name} and {record.name}, "
                         f"trained with {', '.join(differ)}: they would be replaced; use another folder")
