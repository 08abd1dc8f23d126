"""Write a small real dataset as an ImageFolder tree, to try `train.py --data` on a CPU.

    python experiments/write_digits.py /tmp/digits        # DIR/train/<0-9>/*.png, DIR/val/<0-9>/*.png
    python experiments/train.py --data /tmp/digits --epochs 8 --hflip 0 --lighting 0

The images are scikit-learn's copy of the UCI handwritten digits (1,797 scanned digits, 8x8 pixels of 17 grey
levels, 10 classes; shipped inside scikit-learn, no download; `pip install scikit-learn`): a stratified split of
1,437 training and 360 held-out images (seed 0), each scaled up to 80x80 grey PNGs (bilinear).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image

HELD_OUT = 360  # of 1,797: 20%, as train_test_split(test_size=0.2) rounds it


def write_digits(root: str | Path, size: int = 80, seed: int = 0) -> tuple[int, int]:
    """root/{train,val}/<digit>/<index>.png, ``size`` x ``size`` grey; -> (training, held-out) image counts.
    ImportError naming the package when scikit-learn is missing."""
    try:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split
    except ImportError as error:
        raise ImportError("the digits come with scikit-learn: pip install scikit-learn") from error
    digits = load_digits()
    pixels = np.round(digits.images * (255 / 16)).astype(np.uint8)  # [1797, 8, 8], 0 = background
    train, val = train_test_split(np.arange(len(pixels)), test_size=HELD_OUT, stratify=digits.target,
                                  random_state=seed)
    for split, indices in (("train", train), ("val", val)):
        for index in indices:
            directory = Path(root) / split / str(digits.target[index])
            directory.mkdir(parents=True, exist_ok=True)
            image = Image.fromarray(255 - pixels[index])  # dark ink on white paper, as scanned
            image.resize((size, size), Image.Resampling.BILINEAR).save(directory / f"{index:04d}.png")
    return len(train), len(val)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("root", help="directory to write train/ and val/ into (must not hold them yet)")
    parser.add_argument("--size", type=int, default=80, help="image side in pixels (default: 80)")
    args = parser.parse_args(argv)
    taken = [split for split in ("train", "val") if (Path(args.root) / split).exists()]
    if taken:
        print(f"error: {Path(args.root) / taken[0]} exists; choose an empty directory", file=sys.stderr)
        return 2
    if args.size < 8:
        print(f"error: --size {args.size}: must be at least 8 (the digits' own size)", file=sys.stderr)
        return 2
    try:
        train, val = write_digits(args.root, args.size)
    except ImportError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {train} training and {val} held-out digits ({args.size}x{args.size} PNG) under {args.root}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
