"""What a run's results depend on, as digests: a resumed run compares them with the first run's and refuses to
mix results when anything changed (the annotations, the image list, the class map, the model's weights, the box
map), naming what did."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, Iterable, List, Mapping, Optional, Set, Union

import torch
from torch import nn


if TYPE_CHECKING:  # the runner's types, named in an annotation only
    from captum_ext.evaluation.distributed import Processes
    from captum_ext.evaluation.store import BatchRecords

#: Readable names of the fingerprinted inputs, for the refusal message.
DESCRIPTIONS = {
    "annotations": "the annotation files",
    "images": "the image list (ids, files, sizes, categories)",
    "class_map": "the category → class map",
    "model_weights": "the model's weights and buffers",
    "box_map": "the box map file",
}


def tensor_digest(tensors: Mapping[str, torch.Tensor]) -> str:
    """SHA-256 over named tensors: names, dtypes, shapes and bytes, in order.

    Args:
        tensors (mapping of str to Tensor): e.g. a ``state_dict()``.

    Returns:
        str: the hex digest.
    """
    digest = hashlib.sha256()
    for name, value in tensors.items():
        if not isinstance(value, torch.Tensor):
            digest.update(f"{name}={value!r}".encode("utf-8"))
            continue
        value = value.detach().to("cpu").contiguous()
        digest.update(f"{name}:{value.dtype}:{tuple(value.shape)}".encode("utf-8"))
        if value.numel():
            digest.update(value.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def hash_file(digest: "hashlib._Hash", path: Union[str, Path]) -> None:
    """Feed a file's bytes to ``digest``, a block at a time (annotation files of large datasets run to gigabytes).

    Args:
        digest (hashlib hash): the running digest, updated in place.
        path (str or Path): the file.
    """
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)


def file_digest(path: Union[str, Path]) -> str:
    """SHA-256 of a file's bytes.

    Args:
        path (str or Path): the file.

    Returns:
        str: the hex digest.
    """
    digest = hashlib.sha256()
    hash_file(digest, path)
    return digest.hexdigest()


def run_fingerprint(dataset: Any, classes: Mapping[int, int], model: nn.Module,
                    box_map: Optional[Union[str, Path]]) -> Dict[str, Optional[str]]:
    """The digests :func:`changed_inputs` compares.

    Args:
        dataset: the run's :class:`~captum_ext.evaluation.data.AnnotatedImages`.
        classes (mapping of int to int): the resolved category → class map.
        model (nn.Module): the evaluated model.
        box_map (str or Path, optional): the box map file.

    Returns:
        dict: input name → hex digest (``None`` for an input the run does not have).
    """
    mapping = json.dumps(sorted((int(c), int(k)) for c, k in classes.items()))
    return {**dataset.fingerprint(), "class_map": hashlib.sha256(mapping.encode("utf-8")).hexdigest(),
            "model_weights": tensor_digest(model.state_dict()),
            "box_map": file_digest(box_map) if box_map is not None else None}


def library_versions() -> Dict[str, str]:
    """The versions of the libraries that compute a run's maps and scores, recorded in ``run.json``: a run resumed
    under other versions would mix their results. Torch's build tag (``+cu121``) is left out: CPU and CUDA builds of
    one release compute the same.

    Returns:
        dict: ``{"captum_ext": ..., "captum": ..., "torch": ...}``.
    """
    import captum

    from captum_ext._version import __version__

    return {"captum_ext": __version__, "captum": captum.__version__, "torch": torch.__version__.split("+")[0]}


def _versions_changed(earlier: Any, now: Mapping[str, str]) -> str:
    if not isinstance(earlier, dict):
        return "the versions were not recorded by the captum_ext that began it"
    return ", ".join(f"{name} {earlier.get(name)} → {version}" for name, version in now.items()
                     if earlier.get(name) != version)


def changed_inputs(earlier: Mapping[str, Any], now: Mapping[str, Any]) -> List[str]:
    """The readable names of the inputs whose digests differ.

    Args:
        earlier (mapping): the first run's fingerprint.
        now (mapping): this run's.

    Returns:
        list of str: descriptions of what changed, empty when nothing did.
    """
    return [DESCRIPTIONS.get(key, key) for key in sorted(set(earlier) | set(now)) if earlier.get(key) != now.get(key)]


def _setting_change(key: str, earlier: Any, now: Any) -> str:
    """``key``, with its values then and now where they are short enough to read in one line."""
    shown = f"{key}: {json.dumps(earlier)} then, {json.dumps(now)} now"
    return shown if len(shown) <= 400 else key


def check_out_folder(out: Path, settings: Dict[str, Any], resume: bool, records: "BatchRecords",
                     group: "Processes") -> None:
    """Refuse to mix runs: ``out`` is new, or holds this very run and ``resume`` is set; then record the settings.

    Args:
        out (Path): the run's folder.
        settings (dict): the run's settings, with its inputs' digests under ``"inputs"``.
        resume (bool): whether continuing a run found in ``out`` was asked for.
        records (BatchRecords): the folder's progress records.
        group (Processes): the processes of the run (each checks; the main one writes the settings).

    Raises:
        ValueError: ``out`` is a file, or holds another run, or a run whose inputs changed, or this run without
            ``resume``, or progress records without settings, or other files.
    """
    if out.exists() and not out.is_dir():  # every process sees it, so every process says it
        raise ValueError(f"`out` {str(out)!r} is a file, not a folder")
    run_file = out / "run.json"
    widened: Set[str] = set()
    if run_file.is_file() and not records.any() and not (out / "metrics.json").exists():
        # A run that stopped before its first batch left its settings and an empty map store only: nothing is lost
        # by starting again with the settings given now (the error that stopped it may have advised other ones).
        group.barrier()
        if group.is_main:
            run_file.unlink()
            shutil.rmtree(out / "maps.zarr", ignore_errors=True)
        group.barrier()
    if run_file.is_file():
        try:
            earlier = json.loads(run_file.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ValueError(f"the run settings {str(run_file)!r} are corrupt ({err}); use another folder") from None
        now = json.loads(json.dumps(settings))
        # A run stopped by an unreadable image goes on with skip_bad: its finished batches read every image.
        widened = {"skip_bad"} if (earlier.get("skip_bad"), now.get("skip_bad")) == (False, True) else set()
        # Settings first: a changed setting (--resize) also changes the inputs' digests, and is the one to name.
        changed = sorted(k for k in (set(earlier) | set(now)) - widened - {"inputs"} if earlier.get(k) != now.get(k))
        if "versions" in changed:
            raise ValueError(f"`out` {str(out)!r} holds a run made with other library versions "
                             f"({_versions_changed(earlier.get('versions'), now['versions'])}); continuing would mix "
                             f"their results: finish it with those versions, or start again in another folder")
        if changed == ["skip_bad"]:  # made with skip_bad: continuing without it would stop on what it left out
            raise ValueError(f"`out` {str(out)!r} holds a run made with `skip_bad`: pass it to continue the run, or "
                             f"use another folder")
        if changed:
            raise ValueError(f"`out` {str(out)!r} holds a run with other settings "
                             f"({', '.join(_setting_change(k, earlier.get(k), now.get(k)) for k in changed)}); use "
                             f"another folder")
        inputs = changed_inputs(earlier.get("inputs", {}), now.get("inputs", {}))
        if inputs:
            raise ValueError(f"`out` {str(out)!r} holds a run whose inputs have changed since: "
                             f"{', '.join(inputs)}; continuing would mix results, so start again in another folder")
        if not resume:
            raise ValueError(f"`out` {str(out)!r} holds results of this run already: pass `resume` to continue it, "
                             f"or use another folder")
    elif records.any():
        raise ValueError(f"`out` {str(out)!r} holds progress records without run settings; use another folder")
    elif out.is_dir() and any(out.iterdir()):  # the run's files would replace the user's own
        found = sorted(entry.name for entry in out.iterdir())
        raise ValueError(f"`out` {str(out)!r} holds files of no evaluate run ({', '.join(found[:3])}"
                         f"{', …' if len(found) > 3 else ''}); use a new or empty folder")
    group.barrier()
    if group.is_main and (widened or not run_file.is_file()):
        out.mkdir(parents=True, exist_ok=True)
        run_file.write_text(json.dumps(settings, indent=2), encoding="utf-8")
    group.barrier()


def file_state(path: Optional[Union[str, Path]]) -> Optional[List[Any]]:
    """What a batch record keeps of an image file, so that a resumed run can tell whether the file changed since:
    ``[size, modification time in ns, SHA-256 of its bytes]``.

    Args:
        path (str or Path, optional): the image file; ``None`` for an image held in memory.

    Returns:
        list or None: the state; ``None`` without a file or for a file that cannot be read (its sample says why).
    """
    if path is None:
        return None
    try:
        stat = os.stat(path)
        return [stat.st_size, stat.st_mtime_ns, file_digest(path)]
    except OSError:
        return None


def file_changed(path: Union[str, Path], state: List[Any]) -> bool:
    """Whether a file differs from its recorded :func:`file_state`: the size and time settle it when they agree
    (no byte is read), the bytes when only the time differs (a copied dataset keeps its bytes, not its times).

    Args:
        path (str or Path): the image file.
        state (list): the recorded state.

    Returns:
        bool: True for a changed, missing or unreadable file.
    """
    try:
        stat = os.stat(path)
        if stat.st_size != state[0]:
            return True
        return stat.st_mtime_ns != state[1] and file_digest(path) != state[2]
    except OSError:
        return True


def check_image_files(out: Path, files: Mapping[str, str], records: Iterable[Mapping[str, Any]]) -> None:
    """Refuse to resume a run whose finished batches read image files that have changed since.

    Every process checks every finished batch, so that all of them stop together.

    Args:
        out (Path): the run's folder, for the message.
        files (mapping of str to str): dataset index (as a string) → image file.
        records (iterable of dict): the finished batches' records (those made before file states were recorded
            have none and are not checked).

    Raises:
        ValueError: naming the changed files (the first few) and how many changed.
    """
    changed = sorted({files[index] for record in records for index, state in record.get("files", {}).items()
                      if index in files and file_changed(files[index], state)})
    if changed:
        named = ", ".join(changed[:3]) + (f" and {len(changed) - 3} more" if len(changed) > 3 else "")
        raise ValueError(f"`out` {str(out)!r} holds results computed from image files that have changed since: "
                         f"{named}; continuing would mix results, so start again in another folder")
