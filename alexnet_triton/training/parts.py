"""The parts a run builds once from its config: the data loaders, the net (placed on the ranks) and the
optimiser with its schedule."""

from __future__ import annotations

import torch

from ..architecture import parameter_count
from ..data import ResumableLoader, make_loaders, mix_seed, resize_for
from ..model import INPUT_SIZES, AlexNet
from ..precision import AMP_DTYPES
from .backends import Backend
from .checkpointer import seed_everything
from .config import ConfigError, RunConfig
from .distributed import Layout
from .schedule import make_scheduler


def input_size(config: RunConfig) -> int:
    """The image side: --input-size, or the variant's (227 or 224)."""
    return config.input_size or INPUT_SIZES[config.variant]


def build_data(config: RunConfig, layout: Layout) -> tuple[ResumableLoader, ResumableLoader, int, int | None]:
    """(training loader, validation loader, classes, shorter side before the crop): the training loader yields
    this data rank's share of each global batch; the side is --resize or, with --data, the paper's share of
    the image at this input size (None without --data: generated images are already the input size). Images in
    --amp's dtype (the cast autocast would make in conv1), else float32, and the run's layout."""
    resize = config.resize
    if config.data is not None and resize is None:
        resize = resize_for(input_size(config), INPUT_SIZES[config.variant])
    train, val, num_classes = make_loaders(
        config.data, synthetic=config.synthetic, input_size=input_size(config),
        batch_size=config.batch_size // layout.data_ranks, workers=config.workers, seed=config.seed, resize=resize,
        hflip=config.hflip, lighting=config.lighting, ten_crop=config.ten_crop,
        num_classes=config.num_classes if config.data is None else None, train_count=config.train_count,
        val_count=config.val_count, shard=(layout.data_rank, layout.data_ranks) if layout.data_ranks > 1 else None,
        progress=layout.is_main, image_dtype=AMP_DTYPES[config.amp] or torch.float32,
        memory_format=torch.channels_last if config.channels_last else torch.contiguous_format)
    return train, val, num_classes, resize


def build_net(config: RunConfig, layout: Layout, num_classes: int) -> tuple[torch.nn.Module, torch.nn.Module, int]:
    """(model, network, parameters): the net initialised from --seed and placed by ``Layout.wrap``; parameters:
    the whole net's count (a split rank holds a part). Then seeds the global generators from (--seed, data
    rank). ConfigError for an input size or width the topology cannot take."""
    torch.manual_seed(config.seed)
    try:
        whole = AlexNet(config.variant, num_classes, config.backend, config.width, input_size(config),
                        config.dropout, config.init, config.precision)
    except ValueError as error:
        raise ConfigError(str(error)) from None
    model, network = layout.wrap(whole, config, num_classes)
    # Dropout masks (and anything else drawn from the global RNGs from here on) differ per data rank, and every
    # rank's state is saved, so a resumed run continues exactly (--parallel model: one stream, one process's).
    seed_everything(mix_seed(config.seed, layout.data_rank))
    return model, network, parameter_count(config.variant, config.width, num_classes, input_size(config))


def take_images_in_depth_form(config: RunConfig, model: torch.nn.Module, *loaders: ResumableLoader) -> None:
    """Have the loaders batch the images in the space-to-depth form conv1 computes them in, and the model take
    them so (``AlexNet.take_images_in_depth_form``): a channels_last run of the whole Triton net whose conv1 has
    that form at --amp's dtype (or fp32) and --precision; the pass over the images then runs in the loader
    workers, not on the device. Nothing otherwise (the torch backend, NCHW, exact fp32, a split net)."""
    if not config.channels_last or not isinstance(model, AlexNet):
        return
    form = model.take_images_in_depth_form(AMP_DTYPES[config.amp] or torch.float32)
    for loader in loaders:
        loader.take_image_form(form)


def build_optimizer(config: RunConfig, backend: Backend, model: torch.nn.Module, processes: int = 1):
    """(optimizer, scheduler, scaler): the backend's SGD with --lr, --momentum, --weight-decay, with --fused-update
    fused into the Linear layers (``optim.SGD.fuse_into``; ConfigError where its contract does not hold: another
    backend, --amp fp16's gradient scaler, several ``processes``); --schedule (``schedule.make_scheduler``); a
    GradScaler with --amp fp16, else None."""
    optimizer = backend.sgd(model.parameters(), lr=config.lr, momentum=config.momentum,
                            weight_decay=config.weight_decay)
    if config.fused_update:
        if config.backend != "triton":
            raise ConfigError(f"--fused-update needs --backend triton (the update runs in its linear kernels), not "
                              f"{config.backend}")
        if config.amp == "fp16":
            raise ConfigError("--fused-update does not go with --amp fp16: its gradient scaler must unscale and check "
                              "the gradients before the step, which the fused update never writes")
        if processes > 1:
            raise ConfigError(f"--fused-update runs in one process, not {processes}: the gradients of the fused "
                              "layers are never written, so no rank could reduce them")
        optimizer.fuse_into(model)
    scaler = torch.amp.GradScaler("cuda") if config.amp == "fp16" else None
    return optimizer, make_scheduler(optimizer, config), scaler
