"""Differentiable functional API on the Triton kernels."""

from .conv import conv2d
from .lrn import local_response_norm
from .max_pool import max_pool2d

__all__ = ["conv2d", "local_response_norm", "max_pool2d"]
