"""Reading a state dict from a file the user names: ``weights_only`` loading, with errors that name the file, the
argument that gave it and the model it was meant for (explain's and evaluate's weights, the zoo, ROI backbones)."""
from __future__ import annotations

from pathlib import Path
from typing import Dict

import torch
from torch import Tensor


def read_state_dict(path: Path, model_name: str, argument: str = "weights") -> Dict[str, Tensor]:
    """The state dict in ``path`` (a bare one or a checkpoint's ``"state_dict"``), read with ``weights_only=True``.

    Args:
        path (Path): the weights file.
        model_name (str): the model it is for, named in the errors.
        argument (str, optional): the argument that gave ``path``, named in the errors. Default: ``"weights"``.

    Returns:
        dict: parameter and buffer names to tensors.

    Raises:
        FileNotFoundError: no such file.
        ValueError: a file torch cannot read, or one holding something other than a state dict (naming the file).
    """
    expected = f"a state dict or checkpoint of {model_name} saved with torch.save"
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except OSError:  # a missing file or a folder: torch's FileNotFoundError / IsADirectoryError already say so
        raise
    except Exception as err:  # torch raises UnpicklingError, EOFError, RuntimeError... for files it cannot read
        detail = str(err).split("WeightsUnpickler error:", 1)[-1].strip().split("\n")[0] or type(err).__name__
        # weights_only refuses pickled Python objects, such as a whole model ("global"; torch < 2.4: "class")
        if "Unsupported global" in detail or "Unsupported class" in detail:
            detail = detail.split(". Please", 1)[0] + " (save model.state_dict(), not the model)"
        raise ValueError(f"`{argument}` {str(path)!r} is not a readable weights file (expected {expected}): "
                         f"{detail}") from err
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ValueError(f"`{argument}` {str(path)!r} holds a {type(state).__name__}, not a state dict "
                         f"(expected {expected})")
    return state
