"""nn.Modules on the Triton kernels: drop-ins for their torch.nn counterparts."""

from __future__ import annotations

import torch

from . import ops


class Conv2d(torch.nn.Conv2d):
    """``torch.nn.Conv2d`` (same parameters and state_dict) computed by the Triton conv kernels.

    relu: fuse a ReLU into the convolution's epilogue. precision: "ieee" or "tf32".
    Dilation other than 1, string padding and non-zero padding modes are not supported.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0, dilation=1,
                 groups: int = 1, bias: bool = True, padding_mode: str = "zeros", device=None, dtype=None,
                 relu: bool = False, precision: str = "ieee"):
        if isinstance(padding, str):
            raise ValueError(f"Conv2d: string padding {padding!r} is not supported; give ints")
        if dilation not in (1, (1, 1)):
            raise ValueError(f"Conv2d: dilation {dilation!r} is not supported (only 1)")
        if padding_mode != "zeros":
            raise ValueError(f"Conv2d: padding_mode {padding_mode!r} is not supported (only 'zeros')")
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias,
                         padding_mode, device, dtype)
        self.relu = relu
        self.precision = precision

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return ops.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.groups, self.relu,
                          self.precision)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", relu={self.relu}, precision={self.precision!r}"


class MaxPool2d(torch.nn.MaxPool2d):
    """``torch.nn.MaxPool2d`` computed by the Triton max-pool kernels (dilation 1, ceil_mode=False)."""

    def __init__(self, kernel_size, stride=None, padding=0, dilation=1, return_indices: bool = False,
                 ceil_mode: bool = False):
        if dilation not in (1, (1, 1)) or return_indices or ceil_mode:
            raise ValueError("MaxPool2d: dilation, return_indices and ceil_mode are not supported "
                             f"(got {dilation!r}, {return_indices!r}, {ceil_mode!r})")
        super().__init__(kernel_size, stride, padding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return ops.max_pool2d(x, self.kernel_size, self.stride, self.padding)


class LocalResponseNorm(torch.nn.LocalResponseNorm):
    """``torch.nn.LocalResponseNorm`` (odd sizes) computed by the Triton LRN kernels."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return ops.local_response_norm(x, self.size, self.alpha, self.beta, self.k)


class LRNMaxPool2d(torch.nn.Module):
    """``MaxPool2d(kernel_size, stride, padding)(LocalResponseNorm(size, alpha, beta, k)(x))`` in one fused op.

    AlexNet 2012's block after conv1 and conv2 (its x is the conv+ReLU output).
    """

    def __init__(self, size: int, alpha: float = 1e-4, beta: float = 0.75, k: float = 1.0, kernel_size=3,
                 stride=2, padding=0):
        super().__init__()
        self.size, self.alpha, self.beta, self.k = size, alpha, beta, k
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return ops.lrn_max_pool2d(x, self.size, self.alpha, self.beta, self.k, self.kernel_size, self.stride,
                                  self.padding)

    def extra_repr(self) -> str:
        return (f"size={self.size}, alpha={self.alpha}, beta={self.beta}, k={self.k}, "
                f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}")
