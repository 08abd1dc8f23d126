"""Training data: ImageNet-style folders, procedurally drawn shapes, random tensors; resumable loaders.

One entry point for the training script::

    train_loader, val_loader, num_classes = make_loaders(data_dir, synthetic=False, input_size=227,
                                                         batch_size=128, workers=8, seed=0)
    for epoch in range(start_epoch, epochs):
        train_loader.set_epoch(epoch, start_batch=start_step if epoch == start_epoch else 0)
        for images, labels in train_loader:     # images [B, 3, S, S] image_dtype, labels [B] int64
            ...
    for images, labels in val_loader:           # images [B, 3, S, S], or [B, 10, 3, S, S] with ten_crop
        ...
    train_loader.skipped_samples                # unreadable images dropped so far
    train_loader.unreadable                     # {path: reason} of each unreadable image met so far

Sources (``make_loaders``):
- ``data_dir``: ``DIR/train/<class>/*.JPEG`` and ``DIR/val/<class>/*`` read with Pillow in the DataLoader
  workers. Training: shorter side to ``resize``, random ``input_size`` crop, horizontal flip (probability
  ``hflip``), PCA colour lighting (strength ``lighting``), mean/std normalisation (the 2012 paper's pipeline).
  Evaluation: the centre crop, or 10 crops. ``resize`` defaults to ``resize_for(input_size)``: the crop keeps the
  paper's share of the image (224 of 256, 227 of 256 for the 2012 net) at any input size.
- neither: ``ProceduralShapes``, 8 classes of shapes drawn at ``input_size`` (no download), held-out split from
  another seed.
- ``synthetic``: ``SyntheticTensors``, random images and labels for throughput runs.

Reproducibility: ``ResumableSampler`` yields ``SampleKey(epoch, index)``; the datasets draw a sample's random
augmentation from a generator seeded with (seed, epoch, index), so a sample does not depend on the number of
workers, the batch size or what ran before. Each epoch's order is a permutation drawn from (seed, epoch), and
``set_epoch(epoch, start_batch=k)`` starts it at batch k: 2 steps, a restart and 2 more steps see the same batches
as 4 steps in one run. Call ``set_epoch`` before every epoch (otherwise an epoch's order repeats).

Unreadable images (corrupt, truncated, not an image) are dropped from their batch, counted in
``ResumableLoader.skipped_samples`` and listed with the reason in ``ResumableLoader.unreadable`` (whichever
process read them; the caller reports them); a batch loses those samples (it is skipped if none is left), and
the run goes on. Batch positions for ``start_batch`` count the sampler's batches, skipped ones included.

Images are made in float32 and batched in ``image_dtype`` (float32 unless given): a mixed-precision run takes them
in its autocast dtype, the cast its first convolution would make (round to nearest even, the same bits), done in
the loader workers, so the host-to-device copy and conv1's first pass move half the bytes. With ``image_form``
(``AlexNet.take_images_in_depth_form``'s) the workers also rearrange each batch into the space-to-depth form conv1
computes in (``space_to_depth_images``), so conv1 makes no pass over the images on the device.

A data source that cannot be used as given (missing or empty directory, a class only in val, fewer samples than
one batch, contradicting arguments) raises ``DataError``, a ValueError whose message names the path or value.
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Sampler, default_collate
from tqdm import tqdm

if TYPE_CHECKING:
    from .kernels.conv import Depth

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# ImageNet's RGB covariance (pixels in [0, 1]): eigenvalues and eigenvectors (columns), for PCA lighting.
PCA_EIGENVALUES = torch.tensor([0.2175, 0.0188, 0.0045])
PCA_EIGENVECTORS = torch.tensor([[-0.5675, 0.7192, 0.4009],
                                 [-0.5808, -0.0045, -0.8140],
                                 [-0.5836, -0.6948, 0.4203]])
IMAGE_SUFFIXES = (".jpeg", ".jpg", ".png", ".ppm", ".bmp", ".webp", ".tif", ".tiff")
RESIZE = 256  # the papers' shorter side before a 224 (227) crop


class DataError(ValueError):
    """A data source that cannot be used as given; the message names the path or value."""


class Unreadable(NamedTuple):
    """What ``ImageFolderDataset`` returns for a file it cannot read (``collate_skipping`` drops it)."""

    path: str
    reason: str


class SampleKey(NamedTuple):
    """What ``ResumableSampler`` yields and the datasets take: the sample ``index`` in ``epoch``."""

    epoch: int
    index: int


def _unpack(key: SampleKey | int) -> tuple[int, int]:
    """(epoch, index) from a ``SampleKey``, or (0, key) from a plain index."""
    return (key.epoch, key.index) if isinstance(key, SampleKey) else (0, int(key))


def mix_seed(*parts: int) -> int:
    """A 64-bit generator seed that depends on every non-negative part (numpy's SeedSequence hash)."""
    high, low = np.random.SeedSequence(list(parts)).generate_state(2)
    return (int(high) << 32) | int(low)


def _generator(*parts: int) -> torch.Generator:
    return torch.Generator().manual_seed(mix_seed(*parts))


def _channel_vector(values: Sequence[float]) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32).view(3, 1, 1)


def normalize(images: torch.Tensor, mean: Sequence[float] = IMAGENET_MEAN,
              std: Sequence[float] = IMAGENET_STD) -> torch.Tensor:
    """images: [..., 3, H, W] RGB in [0, 1] -> (images - mean) / std per channel, same shape."""
    return (images - _channel_vector(mean)) / _channel_vector(std)


def pca_lighting(image: torch.Tensor, generator: torch.Generator, sigma: float = 0.1) -> torch.Tensor:
    """AlexNet's colour augmentation. image: [3, H, W] RGB in [0, 1] -> same shape.

    Adds ``PCA_EIGENVECTORS @ (alpha * PCA_EIGENVALUES)`` to every pixel, alpha ~ N(0, sigma^2) per eigenvector
    (3 draws from ``generator``; none when sigma is 0).
    """
    if sigma == 0:
        return image
    alpha = torch.randn(3, generator=generator) * sigma
    return image + (PCA_EIGENVECTORS @ (alpha * PCA_EIGENVALUES)).view(3, 1, 1)


def resize_for(input_size: int, full_size: int = 224) -> int:
    """The shorter side to resize to before an ``input_size`` crop: ``RESIZE`` scaled by input_size / full_size,
    so that the crop covers the share of the image that a ``full_size`` crop of 256 does (76 for 67 of 227)."""
    return round(input_size * RESIZE / full_size)


def _resize_shorter_side(image: Image.Image, size: int) -> Image.Image:
    """Bilinear (antialiased) resize so that min(width, height) == size, keeping the aspect ratio."""
    width, height = image.size
    scale = size / min(width, height)
    return image.resize((max(size, round(width * scale)), max(size, round(height * scale))),
                        Image.Resampling.BILINEAR)


def _to_tensor(image: Image.Image) -> torch.Tensor:
    """RGB PIL image of width W, height H -> float32 [3, H, W] in [0, 1]."""
    return torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1).float().div_(255)


class _Transform:
    """Shared by both transforms: crop size, resize target and normalisation."""

    def __init__(self, input_size: int, resize: int, mean: Sequence[float], std: Sequence[float]):
        if input_size > resize:
            raise DataError(f"crop size {input_size} is larger than the resize target {resize} (shorter side)")
        self.input_size, self.resize, self.mean, self.std = input_size, resize, tuple(mean), tuple(std)


class TrainTransform(_Transform):
    """PIL image -> [3, S, S] float32: shorter side to ``resize``, random S x S crop, horizontal flip with
    probability ``hflip``, PCA lighting (``lighting`` = sigma), mean/std normalisation; 0 turns an augmentation
    off. All randomness comes from ``generator``."""

    def __init__(self, input_size: int, resize: int = RESIZE, lighting: float = 0.1, hflip: float = 0.5,
                 mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD):
        super().__init__(input_size, resize, mean, std)
        self.lighting, self.hflip = lighting, hflip

    def __call__(self, image: Image.Image, generator: torch.Generator) -> torch.Tensor:
        image = _resize_shorter_side(image, self.resize)
        width, height = image.size
        top = int(torch.randint(height - self.input_size + 1, (), generator=generator))
        left = int(torch.randint(width - self.input_size + 1, (), generator=generator))
        crop = _to_tensor(image.crop((left, top, left + self.input_size, top + self.input_size)))
        if torch.rand((), generator=generator) < self.hflip:
            crop = crop.flip(-1)
        return normalize(pca_lighting(crop, generator, self.lighting), self.mean, self.std)


class EvalTransform(_Transform):
    """PIL image -> shorter side to ``resize``, then the centre S x S crop [3, S, S], or with ``ten_crop``
    [10, 3, S, S]: the 4 corners (top-left, top-right, bottom-left, bottom-right) and the centre, then the
    same 5 mirrored; normalised. Deterministic: ``generator`` is ignored."""

    def __init__(self, input_size: int, resize: int = RESIZE, ten_crop: bool = False,
                 mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD):
        super().__init__(input_size, resize, mean, std)
        self.ten_crop = ten_crop

    def __call__(self, image: Image.Image, generator: torch.Generator | None = None) -> torch.Tensor:
        image = _to_tensor(_resize_shorter_side(image, self.resize))
        size, (height, width) = self.input_size, image.shape[1:]
        top, left = (height - size) // 2, (width - size) // 2
        centre = image[:, top:top + size, left:left + size]
        if not self.ten_crop:
            return normalize(centre, self.mean, self.std)
        corners = [image[:, top:top + size, left:left + size]
                   for top in (0, height - size) for left in (0, width - size)]
        five = torch.stack([*corners, centre])
        return normalize(torch.cat([five, five.flip(-1)]), self.mean, self.std)


class ImageFolderDataset(Dataset):
    """``root/split/<class>/<image>``; item ``SampleKey(epoch, index)`` -> (transform(image, generator), label),
    or ``Unreadable(path, reason)`` when the file cannot be read (``collate_skipping`` drops it).

    classes: the class names, in label order; default the sorted subdirectories. Give the training set's
    classes for the validation split: a class directory that is not among them is an error.
    seed: the augmentation generator of sample i in epoch e is seeded from (seed, e, i).
    """

    def __init__(self, root: str | os.PathLike, split: str, transform, seed: int = 0,
                 classes: Sequence[str] | None = None):
        directory = Path(root) / split
        if not directory.is_dir():
            raise DataError(f"image directory {directory} not found (expected {Path(root)}/{split}/<class>/)")
        found = sorted(entry.name for entry in os.scandir(directory) if entry.is_dir())
        self.classes = list(found if classes is None else classes)
        label_of = {name: label for label, name in enumerate(self.classes)}
        unknown = [name for name in found if name not in label_of]
        if unknown:
            raise DataError(f"class directory {directory / unknown[0]} has no counterpart among the "
                             f"{len(self.classes)} training classes ({len(unknown)} such classes in {directory})")
        self.samples = [(entry.path, label_of[name]) for name in found
                        for entry in sorted(os.scandir(directory / name), key=lambda entry: entry.name)
                        if entry.is_file() and entry.name.lower().endswith(IMAGE_SUFFIXES)]
        if not self.samples:
            raise DataError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in the class directories of {directory}")
        self.transform, self.seed = transform, seed

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, key: SampleKey | int) -> tuple[torch.Tensor, int] | Unreadable:
        epoch, index = _unpack(key)
        path, label = self.samples[index]
        try:
            with Image.open(path) as file:
                image = file.convert("RGB")
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
            return Unreadable(path, str(error))
        return self.transform(image, _generator(self.seed, epoch, index)), label


def _box(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return (u.abs() <= 1) & (v.abs() <= 1)


def _stripes(t: torch.Tensor, count: int) -> torch.Tensor:
    """Alternate bands of [-1, 1]: ``count`` of them, the first one on."""
    return torch.floor((t + 1) * count / 2) % 2 == 0


# Shape masks in box coordinates (u, v in [-1, 1] span the shape's box; v points down). Easiest first:
# ``num_classes`` takes the first ones, and the CPU preset of experiments/train.py uses two.
SHAPES = {
    "horizontal stripes": lambda u, v: _box(u, v) & _stripes(v, 5),
    "vertical stripes": lambda u, v: _box(u, v) & _stripes(u, 5),
    "disc": lambda u, v: u.square() + v.square() <= 1,
    "ring": lambda u, v: (u.square() + v.square() - 0.6).abs() <= 0.4,
    "square outline": lambda u, v: _box(u, v) & (torch.maximum(u.abs(), v.abs()) >= 0.65),
    "cross": lambda u, v: _box(u, v) & ((u.abs() <= 0.3) | (v.abs() <= 0.3)),
    "triangle": lambda u, v: (v <= 1) & (2 * u.abs() <= v + 1),
    "checkerboard": lambda u, v: _box(u, v) & (_stripes(u, 4) == _stripes(v, 4)),
    "diagonal cross": lambda u, v: _box(u, v) & (((u - v).abs() <= 0.35) | ((u + v).abs() <= 0.35)),
    "filled square": _box,
}


def draw_shapes(num_classes: int, size: int, count: int, seed: int, noise: float = 0.05,
                chunk: int = 512, progress: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """``count`` images of the first ``num_classes`` SHAPES -> (images [count, 3, size, size] uint8,
    labels [count] int64, balanced to within one).

    Each shape spans 40-80% of the image (aspect ratio 0.8-1.25) at a random position; foreground and
    background colours are uniform RGB, independent of the class, apart by 0.3-0.7 per channel (cyclically);
    Gaussian pixel noise of std ``noise``. Same arguments -> bitwise the same tensors. ``progress``: a progress
    bar (stderr) over the chunks of ``chunk`` images.
    """
    if not 2 <= num_classes <= len(SHAPES):
        raise DataError(f"num_classes must be in [2, {len(SHAPES)}], got {num_classes}")
    generator = torch.Generator().manual_seed(seed)
    uniform = lambda *shape: torch.rand(*shape, generator=generator)
    labels = (torch.arange(count) % num_classes)[torch.randperm(count, generator=generator)]
    half = size * (0.2 + 0.2 * uniform(count))
    aspect_root = 1.25 ** (uniform(count) - 0.5)
    half_x, half_y = half * aspect_root, half / aspect_root
    centre_x = half_x + (size - 2 * half_x) * uniform(count)
    centre_y = half_y + (size - 2 * half_y) * uniform(count)
    background = uniform(count, 3)
    foreground = (background + 0.3 + 0.4 * uniform(count, 3)) % 1
    pixel_centres = torch.arange(size, dtype=torch.float32) + 0.5
    images = torch.empty(count, 3, size, size, dtype=torch.uint8)
    for start in tqdm(range(0, count, chunk), desc=f"drawing {count} shapes", unit="chunk", leave=False,
                      disable=not progress or count <= chunk):
        part = slice(start, start + chunk)
        u = (pixel_centres.view(1, 1, size) - centre_x[part].view(-1, 1, 1)) / half_x[part].view(-1, 1, 1)
        v = (pixel_centres.view(1, size, 1) - centre_y[part].view(-1, 1, 1)) / half_y[part].view(-1, 1, 1)
        mask = torch.zeros(len(u), size, size, dtype=torch.bool)
        for label, draw in enumerate(list(SHAPES.values())[:num_classes]):
            chosen = labels[part] == label
            mask[chosen] = draw(u[chosen], v[chosen])
        clean = torch.where(mask.unsqueeze(1), foreground[part].view(-1, 3, 1, 1), background[part].view(-1, 3, 1, 1))
        noisy = clean + noise * torch.randn(clean.shape, generator=generator)
        images[part] = noisy.clamp_(0, 1).mul_(255).round_().to(torch.uint8)
    return images, labels


class ProceduralShapes(Dataset):
    """The built-in dataset (see ``draw_shapes``), generated at construction; item -> (image [3, size, size]
    float32 normalised with mean/std, label int). Takes ``SampleKey`` or plain indices; no augmentation."""

    def __init__(self, num_classes: int = 8, size: int = 67, count: int = 2000, seed: int = 0,
                 mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD, progress: bool = False):
        self.images, self.labels = draw_shapes(num_classes, size, count, seed, progress=progress)
        self.classes = list(SHAPES)[:num_classes]
        self.mean, self.std = tuple(mean), tuple(std)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, key: SampleKey | int) -> tuple[torch.Tensor, int]:
        index = _unpack(key)[1]
        return normalize(self.images[index].float() / 255, self.mean, self.std), int(self.labels[index])


class SyntheticTensors(Dataset):
    """Random data for throughput runs: item -> (image [3, size, size] float32 N(0, 1), label int in
    [0, num_classes)). Images cycle through a pool of ``pool`` tensors drawn once, so items cost a copy."""

    def __init__(self, count: int, size: int, num_classes: int, seed: int = 0, pool: int = 64):
        generator = torch.Generator().manual_seed(seed)
        self.images = torch.randn(min(pool, count), 3, size, size, generator=generator)
        self.labels = torch.randint(num_classes, (count,), generator=generator)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, key: SampleKey | int) -> tuple[torch.Tensor, int]:
        index = _unpack(key)[1]
        return self.images[index % len(self.images)], int(self.labels[index])


class ResumableSampler(Sampler):
    """Yields ``SampleKey(epoch, index)`` for one epoch: a permutation of range(num_samples) drawn from
    (seed, epoch) (``shuffle``) or range order, from position ``start`` on. ``set_epoch`` before every epoch.

    Data-parallel ranks (``shard=(rank, world_size, rank_batch)``): the epoch's order is cut into global
    batches of world_size * rank_batch samples and this rank takes its rank_batch consecutive ones of each
    (a last incomplete global batch is dropped), so the ranks together see exactly the batches of one
    process with batch world_size * rank_batch.
    """

    def __init__(self, num_samples: int, seed: int = 0, shuffle: bool = True,
                 shard: tuple[int, int, int] | None = None):
        self.num_samples, self.seed, self.shuffle, self.shard = num_samples, seed, shuffle, shard
        self.epoch, self.start = 0, 0

    @property
    def epoch_samples(self) -> int:
        """Samples of an epoch (this rank's share when sharded), without drawing its order."""
        if self.shard is None:
            return self.num_samples
        _, world_size, rank_batch = self.shard
        return self.num_samples // (world_size * rank_batch) * rank_batch

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Next iteration: ``epoch``'s order from (this rank's) sample position ``start`` (in [0, len])."""
        if not 0 <= start <= self.epoch_samples:
            raise ValueError(f"start position {start} is outside the epoch of {self.num_samples} samples")
        self.epoch, self.start = epoch, start

    def order(self, epoch: int) -> torch.Tensor:
        """The sample indices of ``epoch`` in order (this rank's share when sharded): [epoch_samples] int64."""
        if not self.shuffle:
            order = torch.arange(self.num_samples)
        else:
            order = torch.randperm(self.num_samples, generator=_generator(self.seed, epoch))
        if self.shard is None:
            return order
        rank, world_size, rank_batch = self.shard
        batches = self.epoch_samples // rank_batch
        return order[:batches * world_size * rank_batch].view(batches, world_size, rank_batch)[:, rank].reshape(-1)

    def __iter__(self):
        return (SampleKey(self.epoch, index) for index in self.order(self.epoch)[self.start:].tolist())

    def __len__(self) -> int:
        return self.epoch_samples - self.start


def space_to_depth_images(images: torch.Tensor, form: Depth, dtype: torch.dtype | None = None) -> torch.Tensor:
    """images [..., C, H, W] -> their space-to-depth ``form`` [..., C*b*b, *form.size], channels_last, in ``dtype``
    (default images'): block (hb, wb), channel (i*b + j)*C + c holds row hb*b + i - pad_h, column wb*b + j - pad_w
    of the images, 0 outside their first ``form.extent`` rows and columns: what ``kernels.space_to_depth`` writes
    on the device, bit for bit, rearranged here by the loaders in two copies (the first casts)."""
    *lead, C, height, width = images.shape
    b, (pad_h, pad_w), (rows, columns), (blocks_h, blocks_w) = form.block, form.pad, form.extent, form.size
    if height < rows or width < columns:
        raise DataError(f"space_to_depth_images: images {tuple(images.shape)} are smaller than the form's "
                        f"{rows}x{columns} rows and columns that conv1 reads")
    padded = images.new_zeros(math.prod(lead), blocks_h * b, blocks_w * b, C, dtype=dtype)  # NHWC, zero-padded
    padded[:, pad_h:pad_h + rows, pad_w:pad_w + columns] = images[..., :rows, :columns].reshape(
        -1, C, rows, columns).movedim(1, -1)
    blocks = padded.view(-1, blocks_h, b, blocks_w, b * C).transpose(2, 3)  # [B, Hb, Wb, i, (j, c)]
    return blocks.reshape(*lead, blocks_h, blocks_w, b * b * C).movedim(-1, -3)  # NHWC memory: channels_last


def as_the_loaders_give(model, images: torch.Tensor) -> torch.Tensor:
    """``images`` [B, 3, S, S], in the dtype ``model`` (an AlexNet) computes in, as train.py's loaders hand them to
    it: channels_last ones in the space-to-depth form its conv1 computes in, where it has one (the model's
    ``take_images_in_depth_form``, which this calls: the model then expects the form); otherwise unchanged."""
    if not images.is_contiguous(memory_format=torch.channels_last):
        return images
    form = model.take_images_in_depth_form(images.dtype)
    return images if form is None else space_to_depth_images(images, form)


def collate_skipping(samples: list[tuple[torch.Tensor, int] | Unreadable], image_dtype: torch.dtype = torch.float32,
                     image_form: Depth | None = None, memory_format: torch.memory_format = torch.contiguous_format):
    """Batch the readable samples -> (images [B', ...] image_dtype (in ``image_form``, if given; else a 4-D batch
    in ``memory_format``, ten-crop batches contiguous), labels [B'] int64, the ``Unreadable`` ones); (None, None,
    unreadable) when none is readable."""
    readable = [sample for sample in samples if not isinstance(sample, Unreadable)]
    images, labels = default_collate(readable) if readable else (None, None)
    if images is not None and image_form is not None:
        images = space_to_depth_images(images, image_form, image_dtype)
    elif images is not None:
        images = images.to(image_dtype, memory_format=memory_format if images.dim() == 4 else torch.contiguous_format)
    return images, labels, [sample for sample in samples if isinstance(sample, Unreadable)]


class ResumableLoader(DataLoader):
    """DataLoader over a ``ResumableSampler`` that yields (images, labels) without the unreadable samples, counts
    them in ``skipped_samples`` and keeps {path: reason} of each in ``unreadable``; images in ``image_dtype`` (and
    ``image_form``, or ``memory_format``: ``collate_skipping``). Workers persist across epochs; augmentation does not
    depend on them."""

    def __init__(self, dataset: Dataset, batch_size: int, *, shuffle: bool, seed: int = 0, workers: int = 0,
                 drop_last: bool = False, pin_memory: bool = False, shard: tuple[int, int] | None = None,
                 image_dtype: torch.dtype = torch.float32, image_form: Depth | None = None,
                 memory_format: torch.memory_format = torch.contiguous_format):
        sampler = ResumableSampler(len(dataset), seed, shuffle, None if shard is None else (*shard, batch_size))
        # A private generator: DataLoader draws a base seed for its workers on every iteration, which would
        # otherwise consume the global RNG (and shift dropout seeds between a run and its resumed copy).
        super().__init__(dataset, batch_size=batch_size, sampler=sampler, generator=torch.Generator().manual_seed(seed),
                         num_workers=workers, collate_fn=functools.partial(
                             collate_skipping, image_dtype=image_dtype, image_form=image_form,
                             memory_format=memory_format),
                         pin_memory=pin_memory, drop_last=drop_last, persistent_workers=workers > 0)
        self.skipped_samples = 0
        self.unreadable: dict[str, str] = {}

    def take_image_form(self, image_form: Depth | None) -> None:
        """Batch the images in ``image_form`` (``collate_skipping``'s) from the first iteration on: before it (the
        workers, once started, keep the collate they were given)."""
        if self._iterator is not None:
            raise RuntimeError("ResumableLoader.take_image_form: the loader has iterated already")
        self.collate_fn = functools.partial(self.collate_fn.func, **(self.collate_fn.keywords | dict(
            image_form=image_form)))

    @property
    def steps_per_epoch(self) -> int:
        """Whole batches of an epoch (this rank's; a training loader drops the last partial one)."""
        return self.sampler.epoch_samples // self.batch_size

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """Next iteration: ``epoch``'s batches from batch ``start_batch`` on (the ones a resumed run has not seen)."""
        self.sampler.set_epoch(epoch, start_batch * self.batch_size)

    def __iter__(self):
        for images, labels, unreadable in super().__iter__():
            self.skipped_samples += len(unreadable)
            self.unreadable.update(unreadable)
            if labels is not None:
                yield images, labels


def make_loaders(data_dir: str | os.PathLike | None, *, synthetic: bool = False, input_size: int, batch_size: int,
                 workers: int = 0, seed: int = 0, resize: int | None = None, ten_crop: bool = False,
                 lighting: float = 0.1, hflip: float = 0.5, num_classes: int | None = None, train_count: int = 2000,
                 val_count: int = 500, pin_memory: bool = False, shard: tuple[int, int] | None = None,
                 progress: bool = False, image_dtype: torch.dtype = torch.float32, image_form: Depth | None = None,
                 memory_format: torch.memory_format = torch.contiguous_format
                 ) -> tuple[ResumableLoader, ResumableLoader, int]:
    """-> (train_loader, val_loader, num_classes); see the module docstring.

    shard: (rank, world_size) of a data-parallel run; batch_size is then the per-rank batch and each rank's
    training loader yields its part of the global batches (``ResumableSampler``); validation is not sharded.

    data_dir: ImageNet-style folders (``resize`` (None: ``resize_for(input_size)``), ``lighting``, ``hflip``,
    ``ten_crop`` apply); None: ``ProceduralShapes``
    (num_classes default 8) or with ``synthetic`` ``SyntheticTensors`` (default 1000), ``train_count`` and
    ``val_count`` images of ``input_size``. Training batches are full (the last partial one is dropped).
    progress: a progress bar while the shapes are drawn. image_dtype: of the batched images (a floating dtype).
    image_form: the space-to-depth form the batches come in (``space_to_depth_images``; ten-crop batches
    [B, 10, ...] too), None: the images [B, 3, S, S], in ``memory_format`` (a channels_last run's batches need no
    layout copy on the device; ten-crop batches stay contiguous).
    """
    if not image_dtype.is_floating_point:
        raise DataError(f"image_dtype must be a floating dtype, got {image_dtype}")
    if data_dir is not None:
        if synthetic or num_classes is not None:
            raise DataError(f"data directory {data_dir}: synthetic/num_classes apply only without a data directory")
        resize = resize_for(input_size) if resize is None else resize
        train = ImageFolderDataset(data_dir, "train", TrainTransform(input_size, resize, lighting, hflip), seed=seed)
        val = ImageFolderDataset(data_dir, "val", EvalTransform(input_size, resize, ten_crop), classes=train.classes)
        num_classes = len(train.classes)
    elif ten_crop or resize is not None:
        raise DataError(f"{'ten_crop' if ten_crop else 'resize'} needs a data directory: the generated images are "
                        "already input_size")
    elif synthetic:
        num_classes = num_classes or 1000
        train, val = (SyntheticTensors(count, input_size, num_classes, mix_seed(seed, split))
                      for split, count in enumerate((train_count, val_count)))
    else:
        num_classes = num_classes or 8
        train, val = (ProceduralShapes(num_classes, input_size, count, mix_seed(seed, split), progress=progress)
                      for split, count in enumerate((train_count, val_count)))
    if len(train) < batch_size:
        raise DataError(f"the training set has {len(train)} samples, fewer than one batch of {batch_size}")
    loader = lambda dataset, train: ResumableLoader(dataset, batch_size, shuffle=train, seed=seed, workers=workers,
                                                    drop_last=train, pin_memory=pin_memory,
                                                    shard=shard if train else None, image_dtype=image_dtype,
                                                    image_form=image_form, memory_format=memory_format)
    return loader(train, True), loader(val, False), num_classes
