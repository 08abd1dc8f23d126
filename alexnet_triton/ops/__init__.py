"""Differentiable functional API on the Triton kernels."""

from .conv import conv2d
from .max_pool import max_pool2d

__all__ = ["conv2d", "max_pool2d"]
