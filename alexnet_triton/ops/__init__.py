"""Differentiable functional API on the Triton kernels."""

from .conv import conv2d

__all__ = ["conv2d"]
