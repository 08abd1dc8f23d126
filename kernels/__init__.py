"""Triton kernels and their launchers, one op per module; installed as ``alexnet_triton.kernels``."""
