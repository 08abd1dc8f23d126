"""AlexNet's convolution layers, as data: the geometry that kernels, tests, inspection and benchmarks share.

Sources: Krizhevsky et al. 2012 (with Caffe's 227x227 input, which gives the
paper's 55x55 conv1 output) and torchvision's ``alexnet`` ("One weird trick").
"""

from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True)
class ConvLayer:
    """One convolution: ``in_channels`` x ``size`` x ``size`` input -> ``out_channels`` feature maps."""

    name: str
    in_channels: int
    out_channels: int
    kernel: int
    stride: int
    padding: int
    groups: int
    size: int  # input height = width

    @property
    def out_size(self) -> int:
        return (self.size + 2 * self.padding - self.kernel) // self.stride + 1

    def scaled(self, channel_divisor: int, size: int) -> ConvLayer:
        """The same kernel/stride/padding/groups with fewer channels and another input size (CPU tests)."""
        def fewer(channels: int, keep_at_least: int) -> int:
            return max(keep_at_least, channels // channel_divisor // self.groups * self.groups)
        in_channels = self.in_channels if self.in_channels <= 4 else fewer(self.in_channels, self.groups)
        return replace(self, in_channels=in_channels, out_channels=fewer(self.out_channels, self.groups),
                       size=size)


CONV_LAYERS: dict[str, tuple[ConvLayer, ...]] = {
    "2012": (
        ConvLayer("conv1", 3, 96, 11, 4, 0, 1, 227),
        ConvLayer("conv2", 96, 256, 5, 1, 2, 2, 27),
        ConvLayer("conv3", 256, 384, 3, 1, 1, 1, 13),
        ConvLayer("conv4", 384, 384, 3, 1, 1, 2, 13),
        ConvLayer("conv5", 384, 256, 3, 1, 1, 2, 13),
    ),
    "torchvision": (
        ConvLayer("conv1", 3, 64, 11, 4, 2, 1, 224),
        ConvLayer("conv2", 64, 192, 5, 1, 2, 1, 27),
        ConvLayer("conv3", 192, 384, 3, 1, 1, 1, 13),
        ConvLayer("conv4", 384, 256, 3, 1, 1, 1, 13),
        ConvLayer("conv5", 256, 256, 3, 1, 1, 1, 13),
    ),
}
