"""Differentiable functional API on the Triton kernels."""

from .conv import conv2d, input_form
from .cross_entropy import cross_entropy
from .dropout import dropout
from .linear import linear
from .lrn import local_response_norm
from .lrn_max_pool import lrn_max_pool2d
from .max_pool import max_pool2d

__all__ = ["conv2d", "cross_entropy", "dropout", "input_form", "linear", "local_response_norm", "lrn_max_pool2d",
           "max_pool2d"]
