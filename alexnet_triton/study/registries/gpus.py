"""The GPUs the study prices and captures launches for, each stated once: published peaks and bandwidth (the
roofline), compile target and SM count (the loop and step models; the launches the inspection, the traffic count and
the host cost capture are an H100's, ``CAPTURED``)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class GPU:
    """One GPU: its published dense peaks (TFLOP/s) and DRAM bandwidth (TB/s); the compile target its kernels are read
    for and its SM count (the loop and step models, and the launches the study captures: split-K slices per SM)."""

    name: str
    fp32: float  # CUDA cores, no tensor cores
    tf32: float  # tensor cores, TF32 operands
    tensor16: float  # tensor cores, fp16 / bf16 operands, fp32 accumulation
    bandwidth: float
    device_pattern: str  # what torch.cuda.get_device_name() contains for this board
    target: str
    sms: int


# Dense (no 2:4 sparsity) peaks at boost clock. H100 SXM5: NVIDIA H100 Tensor Core GPU Architecture whitepaper
# (2022; FP32 66.9, TF32 494.7, FP16/BF16 989.4 TFLOP/s) and the NVIDIA H100 datasheet (HBM3, 3.35 TB/s).
# A100 SXM4 80GB: NVIDIA A100 Tensor Core GPU datasheet (FP32 19.5, TF32 156, FP16/BF16 312 TFLOP/s, HBM2e
# 2,039 GB/s). H200 SXM: NVIDIA H200 datasheet (the H100's compute, HBM3e 4.8 TB/s). The datasheets print
# tensor peaks with sparsity; the dense peak is half. SMs: 132 (H100 and H200 SXM), 108 (A100), the same documents.
GPUS = {
    "h100-sxm": GPU("NVIDIA H100 SXM5 80GB", 66.9, 494.7, 989.4, 3.35, "H100 80GB HBM3", "sm_90", 132),
    "h200-sxm": GPU("NVIDIA H200 SXM 141GB", 66.9, 494.7, 989.4, 4.8, "H200", "sm_90", 132),
    "a100-sxm": GPU("NVIDIA A100 SXM4 80GB", 19.5, 156.0, 312.0, 2.039, "A100-SXM4-80GB", "sm_80", 108),
}
CAPTURED = GPUS["h100-sxm"]  # the GPU whose SM count the captured launches are split for


def gpu_named(device: str) -> str | None:
    """The ``GPUS`` key of a benchmark row's device ("NVIDIA H200 (sm_90)" -> "h200-sxm"), or None."""
    return next((key for key, gpu in GPUS.items() if gpu.device_pattern in device), None)
