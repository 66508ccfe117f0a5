"""Train the captum_ext zoo's scene classifiers on freshly generated scenes, reproducibly, on CPU.

The recipe — digit-crop pretraining, then scene training on fresh scenes every epoch, BatchNorm folded into the
VGG-style nets before shipping — is :func:`captum_ext.training.scene_classifiers.train_scene_classifier`. Writes
``<out>/<name>.pt`` (state_dict) and ``<out>/<name>.json`` (the record ``captum_ext.zoo.info`` returns).

    python scripts/train_zoo.py --model scenes_vgg            # ≈ minutes on 2 CPU cores
    python scripts/train_zoo.py --model all --epochs 8
"""
from __future__ import annotations

import argparse
from pathlib import Path

from captum_ext import zoo
from captum_ext.training import scene_classifiers


def main() -> None:
    names = zoo.available(zoo.SCENE_CLASSIFIER)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="all", choices=names + ["all"], help="a zoo scene classifier or 'all'")
    parser.add_argument("--epochs", type=int, default=scene_classifiers.DEFAULT_EPOCHS)
    parser.add_argument("--per-epoch", type=int, default=scene_classifiers.DEFAULT_SCENES_PER_EPOCH,
                        help="fresh training scenes per epoch")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--pretrain-steps", type=int, default=scene_classifiers.DEFAULT_PRETRAIN_STEPS,
                        help="digit-crop pretraining steps (0: none)")
    parser.add_argument("--out", type=Path, default=zoo.WEIGHTS_DIR)
    args = parser.parse_args()
    for name in names if args.model == "all" else [args.model]:
        scene_classifiers.train_scene_classifier(name, args.out, epochs=args.epochs, per_epoch=args.per_epoch,
                                                 batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                                                 pretrain_steps=args.pretrain_steps)


if __name__ == "__main__":
    main()
