"""nn.Modules on the Triton kernels: drop-ins for their torch.nn counterparts, and the fused blocks AlexNet's
Triton tree is built of: Conv2d(relu=True), LRNMaxPool2d(relu=True), MaxPool2d(relu=True), Linear(relu=True,
dropout=p)."""

from __future__ import annotations

import torch

from . import ops
from .kernels.dropout import check_probability


class Conv2d(torch.nn.Conv2d):
    """``torch.nn.Conv2d`` (same arguments, parameters and state_dict) computed by the Triton conv kernels.

    relu: fuse a ReLU into the convolution's epilogue. precision: "ieee" or "tf32". padding_mode must be
    "zeros": the others would pad a copy of the input outside the kernels. bias_added_after: the block after this
    conv adds its bias (set by that block's ``take_bias_of``): the conv runs without it, still its owner.
    ``mask_relu_of(conv)``: this conv's input is ``conv``'s ReLU output, whose gradient mask this conv's backward
    applies to the input gradient it writes, summing ``conv``'s bias gradient from it too (``ops.conv2d``'s
    relu_input / relu_masked_by_next, relu_input_bias / bias_grad_by_next). depth_form_of
    (H, W): its input is the space-to-depth form of images of that size (``ops.conv2d``'s), None: the images.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0, dilation=1,
                 groups: int = 1, bias: bool = True, padding_mode: str = "zeros", device=None, dtype=None,
                 relu: bool = False, precision: str = "ieee"):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias,
                         padding_mode, device, dtype)
        if padding_mode != "zeros":
            raise NotImplementedError(
                f"Conv2d: padding_mode {padding_mode!r} is not supported (only 'zeros'); pad the input yourself, "
                f"F.pad(x, {list(self._reversed_padding_repeated_twice)}, mode={padding_mode!r}), and use "
                "padding=0")
        self.relu = relu
        self.precision = precision
        self.bias_added_after = False
        self.relu_input = self.relu_masked_by_next = self.bias_grad_by_next = False
        self._masks_relu_of: Conv2d | None = None
        self.depth_form_of: tuple[int, int] | None = None

    def mask_relu_of(self, conv: Conv2d) -> None:
        """Take ``conv``'s ReLU mask into this conv's input gradient, and ``conv``'s bias gradient (if it has a
        bias) from it: ``conv`` (relu=True) must feed this conv and nothing else. This conv holds ``conv``
        unregistered (not a submodule of its own) and reads its bias at each call."""
        if not conv.relu:
            raise ValueError("Conv2d.mask_relu_of: the conv before it must have relu=True")
        self.relu_input = conv.relu_masked_by_next = True
        conv.bias_grad_by_next = conv.bias is not None
        object.__setattr__(self, "_masks_relu_of", conv)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        before = self._masks_relu_of
        return ops.conv2d(x, self.weight, None if self.bias_added_after else self.bias, self.stride, self.padding,
                          self.dilation, self.groups, relu=self.relu, precision=self.precision,
                          relu_input=self.relu_input, relu_masked_by_next=self.relu_masked_by_next,
                          relu_input_bias=before.bias if before is not None and before.bias_grad_by_next else None,
                          bias_grad_by_next=self.bias_grad_by_next, depth_form_of=self.depth_form_of)

    def extra_repr(self) -> str:
        flags = [name for name in ("bias_added_after", "relu_input", "relu_masked_by_next", "bias_grad_by_next")
                 if getattr(self, name)]
        form = f", depth_form_of={self.depth_form_of}" if self.depth_form_of else ""
        return super().extra_repr() + f", relu={self.relu}, precision={self.precision!r}" + \
            "".join(f", {name}=True" for name in flags) + form


class _ConvBiasAfter:
    """A pool block that can add the bias of the conv before it (``take_bias_of``)."""

    _bias_of: Conv2d | None = None

    def take_bias_of(self, conv: Conv2d) -> None:
        """Add ``conv``'s bias to this block's input (its ops' ``bias``: their backward makes its gradient, so the
        conv's makes no pass for it) and run ``conv`` without it. The bias stays ``conv``'s parameter (state_dict
        unchanged), read at each call; this block holds ``conv`` unregistered (not a submodule of its own)."""
        if conv.bias is None or conv.relu:
            raise ValueError(f"{type(self).__name__}: the conv before it must have a bias and no ReLU of its own (a "
                             "ReLU after the bias is this block's)")
        object.__setattr__(self, "_bias_of", conv)
        conv.bias_added_after = True

    def _conv_bias(self) -> torch.Tensor | None:
        return None if self._bias_of is None else self._bias_of.bias

    def _bias_repr(self) -> str:
        return ", bias=the conv's before it" if self._bias_of is not None else ""


class MaxPool2d(_ConvBiasAfter, torch.nn.MaxPool2d):
    """``torch.nn.MaxPool2d`` (every constructor argument) computed by the Triton max-pool kernels.

    relu: pool ``relu(input)`` (a ReLU before the pool fused into it: the backward applies its mask for free).
    ``take_bias_of(conv)``: pool ``input + conv.bias`` (then its relu), the conv run without its bias.
    contiguous_output: the output NCHW whatever the input's layout (a flatten after it is then a view).
    """

    def __init__(self, kernel_size, stride=None, padding=0, dilation=1, return_indices: bool = False,
                 ceil_mode: bool = False, relu: bool = False, contiguous_output: bool = False):
        super().__init__(kernel_size, stride, padding, dilation, return_indices, ceil_mode)
        self.relu = relu
        self.contiguous_output = contiguous_output

    def forward(self, input: torch.Tensor):
        return ops.max_pool2d(input, self.kernel_size, self.stride, self.padding, self.dilation, self.ceil_mode,
                              self.return_indices, relu=self.relu, bias=self._conv_bias(),
                              contiguous_output=self.contiguous_output)

    def extra_repr(self) -> str:
        return super().extra_repr() + (", relu=True" if self.relu else "") + self._bias_repr() + \
            (", contiguous_output=True" if self.contiguous_output else "")


class LocalResponseNorm(torch.nn.LocalResponseNorm):
    """``torch.nn.LocalResponseNorm`` computed by the Triton LRN kernels (k > 0 and alpha >= 0)."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return ops.local_response_norm(input, self.size, self.alpha, self.beta, self.k)


class Linear(torch.nn.Linear):
    """``torch.nn.Linear`` (same parameters and state_dict) computed by the Triton linear kernels.

    relu: fuse a ReLU into the epilogue. dropout: probability of zeroing an output after that, fused too, in
    training mode only (``ops.linear``'s dropout, its mask from a seed drawn per call on the input's device: a
    device tensor, so a captured CUDA graph draws anew at each replay). precision: "ieee" or "tf32".
    fused_update: None, or the SGD step of weight and bias that the training-mode backward applies in the
    weight-gradient kernel (set by ``optim.SGD.fuse_into``). ``mask_relu_of(linear)``: this linear's input is
    ``linear``'s ReLU (+ dropout) output, whose backward this linear's input gradient applies in its epilogue
    (``ops.linear``'s relu_input / relu_masked_by_next).
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, device=None, dtype=None,
                 relu: bool = False, dropout: float = 0.0, precision: str = "ieee"):
        super().__init__(in_features, out_features, bias, device, dtype)
        self.relu = relu
        self.dropout = check_probability("Linear", dropout)
        self.precision = precision
        self.fused_update = None
        self.relu_masked_by_next = False
        self._masks_relu_of: Linear | None = None

    def mask_relu_of(self, linear: Linear) -> None:
        """Take ``linear``'s ReLU and dropout backward into this linear's input gradient: ``linear`` (relu=True)
        must feed this linear and nothing else. This linear holds ``linear`` unregistered (not a submodule of its
        own) and reads its dropout and training mode at each call."""
        if not linear.relu:
            raise ValueError("Linear.mask_relu_of: the linear before it must have relu=True")
        linear.relu_masked_by_next = True
        object.__setattr__(self, "_masks_relu_of", linear)

    def _applied_dropout(self) -> float:
        """The dropout probability this call applies: 0 in eval mode."""
        return self.dropout if self.training else 0.0

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        before = self._masks_relu_of
        return ops.linear(input, self.weight, self.bias, self.relu, self._applied_dropout(),
                          precision=self.precision, update=self.fused_update if self.training else None,
                          relu_input=before is not None,
                          relu_input_dropout=before._applied_dropout() if before is not None else 0.0,
                          relu_masked_by_next=self.relu_masked_by_next)

    def extra_repr(self) -> str:
        flags = "".join(f", {name}=True" for name, on in (("relu_input", self._masks_relu_of is not None),
                                                            ("relu_masked_by_next", self.relu_masked_by_next)) if on)
        return super().extra_repr() + f", relu={self.relu}, dropout={self.dropout}, precision={self.precision!r}" + \
            flags


class Dropout(torch.nn.Dropout):
    """``torch.nn.Dropout`` computed by the Triton dropout kernel (its mask from a seed drawn per call on the
    input's device)."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return ops.dropout(input, self.p, self.training, self.inplace)


class LRNMaxPool2d(_ConvBiasAfter, torch.nn.Module):
    """``MaxPool2d(kernel_size, stride, padding)(LocalResponseNorm(size, alpha, beta, k)(x))`` in one fused op; of
    ``relu(x)`` with ``relu``; ``take_bias_of(conv)``: of x + conv.bias (then its relu), the conv run without it.

    AlexNet 2012's block after conv1 and conv2 (with relu: its x is the conv's output before the ReLU).
    """

    def __init__(self, size: int, alpha: float = 1e-4, beta: float = 0.75, k: float = 1.0, kernel_size=3,
                 stride=2, padding=0, relu: bool = False):
        super().__init__()
        self.size, self.alpha, self.beta, self.k = size, alpha, beta, k
        self.kernel_size, self.stride, self.padding, self.relu = kernel_size, stride, padding, relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return ops.lrn_max_pool2d(x, self.size, self.alpha, self.beta, self.k, self.kernel_size, self.stride,
                                  self.padding, relu=self.relu, bias=self._conv_bias())

    def extra_repr(self) -> str:
        return (f"size={self.size}, alpha={self.alpha}, beta={self.beta}, k={self.k}, "
                f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}, relu={self.relu}"
                + self._bias_repr())


class CrossEntropyLoss(torch.nn.CrossEntropyLoss):
    """``torch.nn.CrossEntropyLoss`` (same constructor arguments and state_dict) computed by the Triton
    cross-entropy kernels."""

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return ops.cross_entropy(input, target, weight=self.weight, ignore_index=self.ignore_index,
                                 reduction=self.reduction, label_smoothing=self.label_smoothing)
