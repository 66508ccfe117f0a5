"""The ``folder:`` (``ImageFolder``, class labels only) and ``scenes:`` (generated) sources of ``open_dataset``."""
from __future__ import annotations

import inspect
import os
from typing import Dict, List

import torch
from PIL import Image
from torch import Tensor

from captum_ext._utils.images import displayed_size
from captum_ext.evaluation.data import ImageEntry, read_image
from captum_ext.metrics.ground_truth import GroundTruth


class FolderSource:
    """``root/CLASS/…/image``: one truth per image, its class index, with no boxes and no mask."""

    def __init__(self, root: str) -> None:
        from torchvision.datasets import ImageFolder

        if not os.path.isdir(root):
            raise FileNotFoundError(f"image folder not found: {root}" + (" (it is a file)" if os.path.isfile(root)
                                                                        else ""))
        # Empty class directories are legal here (they just add no images); older torchvision lacks the flag.
        kwargs = {"allow_empty": True} if "allow_empty" in inspect.signature(ImageFolder).parameters else {}
        try:
            self.dataset = ImageFolder(root, **kwargs)
        except FileNotFoundError:  # no class sub-directory, or (old torchvision) a class without images
            self.dataset = None
        samples = self.dataset.samples if self.dataset is not None else []
        classes = self.dataset.classes if self.dataset is not None else []
        self.categories: Dict[int, str] = dict(enumerate(classes))
        self.has_boxes, self.has_masks = False, False
        self.ids_are_classes = True  # ImageFolder's class index is how models trained on the folder label it
        self.bad: list = []
        self.annotation_files: List[str] = []
        self.carried_class_map = None
        self.entries: List[ImageEntry] = []
        for index, (path, label) in enumerate(samples):
            try:  # the header only: PIL decodes pixels lazily
                with Image.open(path) as img:
                    height, width = displayed_size(img)
            except Exception:  # an unreadable file is reported when its sample is read
                height, width = 0, 0
            image_id = os.path.relpath(path, root).replace(os.sep, "/")
            self.entries.append(ImageEntry(index, image_id, path, height, width, (int(label),)))

    def image(self, entry: ImageEntry) -> Tensor:
        """The decoded image of ``entry``."""
        return read_image(entry.file)

    def truths(self, entry: ImageEntry) -> List[GroundTruth]:
        """The image's class, with no location."""
        return [GroundTruth(entry.categories[0], torch.zeros(0, 4), None)]


#: The seed of ``scenes:MODE:N:train``: training scenes apart from the held-out ones (seed 20,000) and from those the
#: zoo's models were trained on (seeds ``seed · 1000 + epoch`` of a small ``seed``).
FITTING_SEED = 30_000


class SceneSource:
    """Held-out (or, with ``train``, training) scenes generated in memory; category = digit, truth = the boxes and
    union mask of its digits."""

    def __init__(self, mode: str, n: int, train: bool = False) -> None:
        from captum_ext.datasets.scenes import make_scenes
        from captum_ext.training.scene_classifiers import HELD_OUT_SEED

        self.entries: List[ImageEntry] = []
        self.categories: Dict[int, str] = {d: str(d) for d in range(10)}
        self.has_boxes, self.has_masks = True, True
        self.ids_are_classes = True
        self.bad: list = []
        self.annotation_files: List[str] = []
        self.carried_class_map = None
        if n < 1:
            return  # open_dataset reports that the spec yields no images
        # The zoo's held-out seed: `scenes:` scores the models on the scenes their reported accuracy comes from.
        self.batch = make_scenes(n, mode=mode, split="train", seed=FITTING_SEED) if train else \
            make_scenes(n, mode=mode, split="test", seed=HELD_OUT_SEED)
        height, width = self.batch.images.shape[-2:]
        for index in range(n):
            labels = self.batch.object_labels[index]
            cats = tuple(sorted({int(c) for c in labels[labels >= 0]}))
            self.entries.append(ImageEntry(index, index, None, int(height), int(width), cats))

    def image(self, entry: ImageEntry) -> Tensor:
        """The scene image (a copy, so a caller may modify it)."""
        return self.batch.images[entry.index].clone()

    def truths(self, entry: ImageEntry) -> List[GroundTruth]:
        """Per digit class: its digits' boxes and the union of their masks."""
        labels = self.batch.object_labels[entry.index]
        truths = []
        for category in entry.categories:
            match = labels == category
            boxes = self.batch.object_boxes[entry.index][match].clone()
            truths.append(GroundTruth(category, boxes, self.batch.object_masks[entry.index][match].any(dim=0)))
        return truths
