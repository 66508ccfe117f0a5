"""A small, seeded training loop shared by the trainable models (AdamW + one-cycle schedule, progress bar)."""
from __future__ import annotations

import random
from pathlib import Path
from typing import Callable, Dict, List, Mapping, Optional, Union

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, numpy and torch; return a torch generator seeded the same way (for shuffling)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def train_epochs(
    model: nn.Module,
    n: int,
    batch_loss: Callable[[Tensor], Mapping[str, Tensor]],
    epochs: int,
    batch_size: int = 64,
    lr: float = 2e-3,
    weight_decay: float = 1e-4,
    seed: int = 0,
    show_progress: bool = True,
    desc: str = "training",
    checkpoint: Optional[Union[str, Path]] = None,
) -> List[Dict[str, float]]:
    """Train ``model`` for ``epochs`` passes over ``n`` examples in shuffled mini-batches.

    Args:
        model: the module; it is put in train mode during the loop and in eval mode afterwards.
        n: number of training examples.
        batch_loss: maps a ``LongTensor`` of example indices to a dict of scalar tensors whose ``"total"`` entry is
            minimised (the other entries are logged).
        epochs, batch_size, lr, weight_decay: optimisation settings (AdamW, one-cycle learning rate).
        seed: seeds Python, numpy and torch, and the shuffling.
        show_progress: show a progress bar (one per run, with the running loss).
        desc: progress bar label.
        checkpoint: if given, the model's ``state_dict`` is saved there after every epoch.

    Returns:
        One dict per epoch with the mean of each logged part.
    """
    if epochs < 1 or n < 1 or batch_size < 1:
        raise ValueError(f"`epochs`, the number of examples and `batch_size` must be >= 1, got {epochs}, {n}, "
                         f"{batch_size}")
    generator = seed_everything(seed)
    steps_per_epoch = (n + batch_size - 1) // batch_size
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=epochs * steps_per_epoch)
    history: List[Dict[str, float]] = []
    model.train()
    try:
        with tqdm(total=epochs * steps_per_epoch, disable=not show_progress, desc=desc) as bar:
            for epoch in range(epochs):
                order = torch.randperm(n, generator=generator)
                sums: Dict[str, float] = {}
                for step in range(steps_per_epoch):
                    index = order[step * batch_size : (step + 1) * batch_size]
                    parts = batch_loss(index)
                    optimizer.zero_grad(set_to_none=True)
                    parts["total"].backward()
                    optimizer.step()
                    schedule.step()
                    for key, value in parts.items():
                        sums[key] = sums.get(key, 0.0) + float(value.detach()) * len(index)
                    bar.update(1)
                    bar.set_postfix(epoch=epoch + 1, loss=f"{float(parts['total'].detach()):.4f}")
                mean_parts = {key: value / n for key, value in sums.items()}
                history.append(mean_parts)
                if checkpoint is not None:
                    torch.save(model.state_dict(), checkpoint)
    finally:
        model.eval()
    return history
