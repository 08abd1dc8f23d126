"""The data pipeline: procedural shapes, ImageNet-style folders, transforms, resumable loaders, bad data."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from alexnet_triton import ops
from alexnet_triton.data import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    DataError,
    EvalTransform,
    ImageFolderDataset,
    ProceduralShapes,
    ResumableLoader,
    ResumableSampler,
    SampleKey,
    TrainTransform,
    make_loaders,
    pca_lighting,
    space_to_depth_images,
)
from alexnet_triton.kernels import space_to_depth

CLASSES = ("cat", "dog")


def write_tree(root, train_per_class=3, val_per_class=2, size=(40, 30)):
    """root/{train,val}/{cat,dog}/*.JPEG of fresh random pixels; returns the number of training images."""
    rng = np.random.default_rng()
    for split, count in (("train", train_per_class), ("val", val_per_class)):
        for name in CLASSES:
            directory = root / split / name
            directory.mkdir(parents=True)
            for i in range(count):
                pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
                Image.fromarray(pixels).save(directory / f"{name}_{i}.JPEG", quality=95)
    return train_per_class * len(CLASSES)


def collect(loader, steps=None):
    batches = []
    for images, labels in loader:
        batches.append((images, labels))
        if len(batches) == steps:
            break
    return batches


def assert_same_batches(actual, expected):
    assert len(actual) == len(expected)
    for (images, labels), (images_expected, labels_expected) in zip(actual, expected, strict=True):
        assert torch.equal(images, images_expected) and torch.equal(labels, labels_expected)


# ---- procedural shapes ----

def test_procedural_shapes_are_deterministic_per_seed():
    seed = int(torch.randint(0, 2**31, ()))
    first, again, other = (ProceduralShapes(8, 32, 200, s) for s in (seed, seed, seed + 1))
    assert torch.equal(first.images, again.images) and torch.equal(first.labels, again.labels)
    assert not torch.equal(first.images, other.images)


@pytest.mark.parametrize("num_classes, count", [(8, 203), (10, 50), (6, 6)])
def test_procedural_shapes_balance_and_format(num_classes, count):
    dataset = ProceduralShapes(num_classes, 29, count, seed=int(torch.randint(0, 2**31, ())))
    counts = torch.bincount(dataset.labels, minlength=num_classes)
    assert len(dataset) == count and counts.max() - counts.min() <= 1 and len(counts) == num_classes
    image, label = dataset[SampleKey(3, count - 1)]
    assert image.shape == (3, 29, 29) and image.dtype == torch.float32 and isinstance(label, int)
    assert torch.equal(image, dataset[count - 1][0])
    pixels = image * torch.tensor(IMAGENET_STD).view(3, 1, 1) + torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    assert pixels.min() >= -1e-6 and pixels.max() <= 1 + 1e-6


def test_mean_colour_does_not_predict_the_class():
    """Nearest class mean on the 3 channel means, fitted on train, scored on held-out: about chance (1/8)."""
    train_loader, val_loader, num_classes = make_loaders(None, input_size=32, batch_size=50, seed=7,
                                                         train_count=2000, val_count=1000)
    train, held_out = train_loader.dataset, val_loader.dataset
    train_colours, held_out_colours = (d.images.float().mean((2, 3)) for d in (train, held_out))
    centroids = torch.stack([train_colours[train.labels == c].mean(0) for c in range(num_classes)])
    predicted = torch.cdist(held_out_colours, centroids).argmin(1)
    accuracy = (predicted == held_out.labels).float().mean().item()
    assert accuracy < 2 / num_classes
    # and every class's average colour is within 0.3 standard deviations of the overall one (~5x its noise)
    spread = (centroids - train_colours.mean(0)).abs() / train_colours.std(0)
    assert spread.max() < 0.3


def test_train_and_held_out_splits_differ():
    train_loader, val_loader, _ = make_loaders(None, input_size=24, batch_size=10, seed=3, train_count=100,
                                               val_count=100)
    train_images, held_out_images = train_loader.dataset.images, val_loader.dataset.images
    assert not torch.equal(train_images, held_out_images)
    # no held-out image appears in the training set
    distances = torch.cdist(held_out_images.flatten(1).float(), train_images.flatten(1).float())
    assert distances.min() > 0


def test_synthetic_mode():
    train_loader, val_loader, num_classes = make_loaders(None, synthetic=True, input_size=19, batch_size=4,
                                                         num_classes=5, train_count=10, val_count=6)
    images, labels = next(iter(train_loader))
    assert num_classes == 5 and images.shape == (4, 3, 19, 19) and images.dtype == torch.float32
    assert labels.dtype == torch.int64 and 0 <= labels.min() and labels.max() < 5
    assert len(train_loader) == 2 and sum(len(labels) for _, labels in val_loader) == 6


# ---- transforms ----

def test_pca_lighting_matches_the_formula():
    image = torch.rand(3, 5, 7)
    seed = int(torch.randint(0, 2**31, ()))
    eigenvalues = [0.2175, 0.0188, 0.0045]
    eigenvectors = [[-0.5675, 0.7192, 0.4009], [-0.5808, -0.0045, -0.8140], [-0.5836, -0.6948, 0.4203]]
    alpha = (torch.randn(3, generator=torch.Generator().manual_seed(seed)) * 0.1).tolist()
    expected = image.clone()
    for channel in range(3):
        expected[channel] += sum(eigenvectors[channel][j] * alpha[j] * eigenvalues[j] for j in range(3))
    actual = pca_lighting(image, torch.Generator().manual_seed(seed), sigma=0.1)
    torch.testing.assert_close(actual, expected, atol=1e-6, rtol=0)
    assert torch.equal(pca_lighting(image, torch.Generator(), sigma=0), image)


@pytest.mark.parametrize("hflip, flips", [(0.5, {0, 1}), (0.0, {0})])
def test_train_crop_is_a_window_of_the_resized_image(tmp_path, hflip, flips):
    """Without lighting, the output is one of the (top, left, flip) crops of the resized, normalised image; mirrored
    ones only with a flip probability."""
    path = tmp_path / "image.png"
    Image.fromarray(np.random.default_rng().integers(0, 256, (30, 40, 3), dtype=np.uint8)).save(path)
    image = Image.open(path).convert("RGB")
    resized = torch.from_numpy(np.array(image.resize((43, 32), Image.Resampling.BILINEAR))).permute(2, 0, 1) / 255
    resized = (resized - torch.tensor(IMAGENET_MEAN).view(3, 1, 1)) / torch.tensor(IMAGENET_STD).view(3, 1, 1)
    windows = {(top, left, flip): resized[:, top:top + 24, left:left + 24].flip(-1) if flip else
               resized[:, top:top + 24, left:left + 24] for top in range(9) for left in range(20) for flip in (0, 1)}
    seen = set()
    for seed in range(12):
        crop = TrainTransform(24, resize=32, lighting=0, hflip=hflip)(image, torch.Generator().manual_seed(seed))
        matches = [key for key, window in windows.items() if torch.allclose(crop, window, atol=1e-5)]
        assert len(matches) >= 1
        seen.add(matches[0])
    assert len(seen) > 6 and {flip for _, _, flip in seen} == flips


def test_eval_transform_centre_and_ten_crop(tmp_path):
    path = tmp_path / "image.png"
    Image.fromarray(np.random.default_rng().integers(0, 256, (30, 40, 3), dtype=np.uint8)).save(path)
    image = Image.open(path).convert("RGB")
    centre = EvalTransform(24, resize=32)(image)
    crops = EvalTransform(24, resize=32, ten_crop=True)(image)
    assert centre.shape == (3, 24, 24) and crops.shape == (10, 3, 24, 24)
    assert torch.equal(crops[4], centre)
    assert torch.equal(crops[5:], crops[:5].flip(-1))
    wide = EvalTransform(32, resize=32, ten_crop=True)(image)  # resized to 43 x 32: corners 11 pixels apart
    assert torch.equal(wide[0][:, :, 11:], wide[1][:, :, :-11]) and torch.equal(wide[0], wide[2])
    with pytest.raises(ValueError, match="crop size 40 is larger than the resize target 32"):
        EvalTransform(40, resize=32)


# ---- image folders ----

def test_image_folder_loaders_shapes_and_dtypes(tmp_path):
    write_tree(tmp_path)
    train_loader, val_loader, num_classes = make_loaders(tmp_path, input_size=24, resize=32, batch_size=2,
                                                         seed=1)
    assert num_classes == 2 and train_loader.dataset.classes == list(CLASSES)
    train_batches, val_batches = collect(train_loader), collect(val_loader)
    assert len(train_batches) == 3 and len(val_batches) == 2
    for images, labels in train_batches + val_batches:
        assert images.shape == (2, 3, 24, 24) and images.dtype == torch.float32 and labels.dtype == torch.int64
    assert torch.cat([labels for _, labels in val_batches]).tolist() == [0, 0, 1, 1]
    _, ten_crop_loader, _ = make_loaders(tmp_path, input_size=24, resize=32, batch_size=3, ten_crop=True)
    assert [images.shape for images, _ in ten_crop_loader] == [(3, 10, 3, 24, 24), (1, 10, 3, 24, 24)]


@pytest.mark.parametrize("workers", [0, 2])
def test_loaders_batch_images_in_image_dtype(tmp_path, workers):
    """A mixed-precision run's loaders: the float32 batches, rounded to the image dtype (to nearest even, as an
    autocast cast), by the workers too; labels unchanged."""
    write_tree(tmp_path)
    loaders = {dtype: make_loaders(tmp_path, input_size=24, resize=32, batch_size=2, seed=1, workers=workers,
                                   image_dtype=dtype)[:2] for dtype in (torch.float32, torch.bfloat16)}
    for fp32_loader, low_loader in zip(loaders[torch.float32], loaders[torch.bfloat16], strict=True):
        fp32_batches, low_batches = collect(fp32_loader), collect(low_loader)
        assert len(low_batches) == len(fp32_batches) > 0
        for (images, labels), (low_images, low_labels) in zip(fp32_batches, low_batches, strict=True):
            assert low_images.dtype == torch.bfloat16 and torch.equal(low_images, images.to(torch.bfloat16))
            assert torch.equal(low_labels, labels)


@pytest.mark.parametrize("workers", [0, 2])
@pytest.mark.parametrize("ten_crop", [False, True], ids=["centre", "ten-crop"])
def test_loaders_batch_images_in_conv1s_depth_form(tmp_path, workers, ten_crop):
    """A channels_last Triton run whose conv1 computes in space-to-depth form (--amp): both loaders hand out that
    form of the images they would batch (the device pass's bits), ten-crop batches [B, 10, ...] too; the form
    is taken before the first iteration only."""
    write_tree(tmp_path)
    form = ops.input_form((8, 3, 11, 11), (35, 35), 4, 2, dtype=torch.bfloat16)
    made = lambda: make_loaders(tmp_path, input_size=35, resize=40, batch_size=2, seed=1, workers=workers,
                                ten_crop=ten_crop, image_dtype=torch.bfloat16)[:2]
    plain, formed = made(), made()
    for loader in formed:
        loader.take_image_form(form)
    for plain_loader, formed_loader in zip(plain, formed, strict=True):
        plain_batches, formed_batches = collect(plain_loader), collect(formed_loader)
        assert len(formed_batches) == len(plain_batches) > 0
        for (images, labels), (formed_images, formed_labels) in zip(plain_batches, formed_batches, strict=True):
            flat = images.flatten(0, -4)  # the ten crops as a batch
            expected = space_to_depth.space_to_depth(flat, form.block, form.size, form.pad, form.extent)
            assert formed_images.shape == (*images.shape[:-3], 48, *form.size)
            assert torch.equal(formed_images.flatten(0, -4), expected) and torch.equal(formed_labels, labels)
            assert formed_images.flatten(0, -4).is_contiguous(memory_format=torch.channels_last)
    if workers:
        with pytest.raises(RuntimeError, match="has iterated already"):
            formed[0].take_image_form(None)


@pytest.mark.parametrize("ten_crop", [False, True], ids=["centre", "ten-crop"])
def test_loaders_batch_a_channels_last_run_s_images_channels_last(tmp_path, ten_crop):
    """memory_format channels_last (train.py --channels-last): the same values, 4-D batches channels_last (no
    layout copy on the device), ten-crop ones contiguous (evaluation flattens them first)."""
    write_tree(tmp_path)
    made = {layout: make_loaders(tmp_path, input_size=24, resize=32, batch_size=2, seed=1, ten_crop=ten_crop,
                                 memory_format=layout)[:2] for layout in (torch.contiguous_format, torch.channels_last)}
    for nchw_loader, nhwc_loader in zip(made[torch.contiguous_format], made[torch.channels_last], strict=True):
        for (images, labels), (nhwc, nhwc_labels) in zip(collect(nchw_loader), collect(nhwc_loader), strict=True):
            assert torch.equal(nhwc, images) and torch.equal(nhwc_labels, labels)
            assert nhwc.is_contiguous(memory_format=torch.channels_last if nhwc.dim() == 4 else
                                      torch.contiguous_format)


def test_depth_form_of_images_smaller_than_it_reads_is_refused():
    form = ops.input_form((8, 3, 11, 11), (35, 35), 4, 2, dtype=torch.bfloat16)
    with pytest.raises(DataError, match=r"images \(2, 3, 30, 35\) are smaller than the form's 35x35"):
        space_to_depth_images(torch.randn(2, 3, 30, 35), form)


def test_augmentation_is_reproducible_from_seed_epoch_index(tmp_path):
    write_tree(tmp_path)
    dataset = lambda seed: ImageFolderDataset(tmp_path, "train", TrainTransform(24, resize=32), seed=seed)
    same, again, other_seed = dataset(5), dataset(5), dataset(6)
    assert torch.equal(same[SampleKey(2, 3)][0], again[SampleKey(2, 3)][0])
    assert not torch.equal(same[SampleKey(2, 3)][0], same[SampleKey(3, 3)][0])
    assert not torch.equal(same[SampleKey(2, 3)][0], other_seed[SampleKey(2, 3)][0])


@pytest.mark.parametrize("workers", [0, 2])
def test_resume_mid_epoch_sees_the_same_batches(tmp_path, workers):
    """2 steps, a fresh loader resumed at batch 2, 2 more steps == 4 steps in one run (augmented images)."""
    write_tree(tmp_path, train_per_class=5)
    make = lambda: make_loaders(tmp_path, input_size=24, resize=32, batch_size=2, seed=11, workers=workers)[0]
    uninterrupted = make()
    uninterrupted.set_epoch(1)
    four_steps = collect(uninterrupted, steps=4)
    first_run, resumed = make(), make()
    first_run.set_epoch(1)
    resumed.set_epoch(1, start_batch=2)
    assert len(resumed) == 3
    assert_same_batches(collect(first_run, steps=2) + collect(resumed, steps=2), four_steps)
    uninterrupted.set_epoch(1, start_batch=2)  # the same loader (and workers) after a break
    assert_same_batches(collect(uninterrupted, steps=2), four_steps[2:])
    in_process = make_loaders(tmp_path, input_size=24, resize=32, batch_size=2, seed=11, workers=0)[0]
    in_process.set_epoch(1)
    assert_same_batches(collect(in_process, steps=4), four_steps)


def test_sampler_skip_is_the_tail_of_the_epoch_and_epochs_differ():
    sampler = ResumableSampler(50, seed=int(torch.randint(0, 2**31, ())))
    sampler.set_epoch(4)
    full = list(sampler)
    assert sorted(key.index for key in full) == list(range(50)) and {key.epoch for key in full} == {4}
    sampler.set_epoch(4, start=12)
    assert list(sampler) == full[12:] and len(sampler) == 38
    sampler.set_epoch(5)
    assert [key.index for key in sampler] != [key.index for key in full]
    with pytest.raises(ValueError, match="start position 51"):
        sampler.set_epoch(0, start=51)
    unshuffled = ResumableSampler(5, shuffle=False)
    unshuffled.set_epoch(9, start=2)
    assert [key.index for key in unshuffled] == [2, 3, 4]


def test_procedural_loader_resumes_after_epochs():
    loader = make_loaders(None, input_size=16, batch_size=4, seed=2, train_count=40, val_count=8)[0]
    epochs = []
    for epoch in range(2):
        loader.set_epoch(epoch)
        epochs.append(collect(loader))
    assert len(epochs[1]) == 10 and not torch.equal(epochs[0][0][1], epochs[1][0][1])
    resumed = make_loaders(None, input_size=16, batch_size=4, seed=2, train_count=40, val_count=8)[0]
    resumed.set_epoch(1, start_batch=7)
    assert_same_batches(collect(resumed), epochs[1][7:])


# ---- bad data ----

def test_missing_directory(tmp_path):
    with pytest.raises(DataError, match=str(tmp_path / "absent" / "train")):
        make_loaders(tmp_path / "absent", input_size=24, resize=32, batch_size=2)
    write_tree(tmp_path / "no_val")
    for name in CLASSES:
        for path in (tmp_path / "no_val" / "val" / name).iterdir():
            path.unlink()
        (tmp_path / "no_val" / "val" / name).rmdir()
    (tmp_path / "no_val" / "val").rmdir()
    with pytest.raises(DataError, match=str(tmp_path / "no_val" / "val")):
        make_loaders(tmp_path / "no_val", input_size=24, resize=32, batch_size=2)


def test_directory_without_images(tmp_path):
    for name in CLASSES:
        (tmp_path / "train" / name).mkdir(parents=True)
        (tmp_path / "train" / name / "notes.txt").write_text("not an image")
    with pytest.raises(DataError, match=f"no images .* of {tmp_path / 'train'}"):
        ImageFolderDataset(tmp_path, "train", EvalTransform(24, resize=32))


def test_validation_class_missing_from_training(tmp_path):
    write_tree(tmp_path)
    (tmp_path / "val" / "emu").mkdir()
    Image.new("RGB", (40, 30)).save(tmp_path / "val" / "emu" / "emu_0.JPEG")
    with pytest.raises(DataError, match=f"{tmp_path / 'val' / 'emu'} has no counterpart"):
        make_loaders(tmp_path, input_size=24, resize=32, batch_size=2)


@pytest.mark.parametrize("workers", [0, 2])
def test_corrupt_images_are_skipped_and_counted(tmp_path, workers):
    good = write_tree(tmp_path)
    (tmp_path / "train" / "cat" / "garbage.JPEG").write_bytes(np.random.default_rng().bytes(500))
    intact = (tmp_path / "train" / "dog" / "dog_0.JPEG").read_bytes()
    (tmp_path / "train" / "dog" / "truncated.JPEG").write_bytes(intact[:len(intact) // 2])
    train_loader, _, _ = make_loaders(tmp_path, input_size=24, resize=32, batch_size=good + 2, workers=workers)
    for epoch in range(2):
        train_loader.set_epoch(epoch)
        (images, labels), = collect(train_loader)
        assert images.shape == (good, 3, 24, 24) and sorted(labels.tolist()) == [0, 0, 0, 1, 1, 1]
        assert train_loader.skipped_samples == 2 * (epoch + 1)
        assert sorted(train_loader.unreadable) == [str(tmp_path / "train" / name) for name in
                                                   ("cat/garbage.JPEG", "dog/truncated.JPEG")]
        assert all(train_loader.unreadable.values())  # the reason, from Pillow


def test_batch_of_only_unreadable_images_is_skipped(tmp_path):
    for name in CLASSES:
        (tmp_path / "train" / name).mkdir(parents=True)
        (tmp_path / "train" / name / "broken.JPEG").write_bytes(b"not a jpeg")
    dataset = ImageFolderDataset(tmp_path, "train", TrainTransform(24, resize=32))
    loader = ResumableLoader(dataset, batch_size=1, shuffle=True)
    assert collect(loader) == []
    assert loader.skipped_samples == 2 and len(loader.unreadable) == 2


def test_make_loaders_argument_errors(tmp_path):
    with pytest.raises(DataError, match="only without a data directory"):
        make_loaders(tmp_path, synthetic=True, input_size=24, batch_size=2)
    with pytest.raises(DataError, match="ten_crop needs a data directory"):
        make_loaders(None, ten_crop=True, input_size=24, batch_size=2)
    with pytest.raises(DataError, match="num_classes must be in"):
        make_loaders(None, input_size=16, batch_size=2, num_classes=11)
    with pytest.raises(DataError, match="fewer than one batch of 64"):
        make_loaders(None, input_size=16, batch_size=64, train_count=10, val_count=10)
    with pytest.raises(DataError, match="image_dtype must be a floating dtype, got torch.uint8"):
        make_loaders(None, input_size=16, batch_size=2, image_dtype=torch.uint8)
