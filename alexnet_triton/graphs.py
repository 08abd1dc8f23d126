"""A training step captured in one CUDA graph and replayed: no Python, no launch overhead per step.

``GraphedStep`` wraps a step function ``step(images, labels) -> (loss, logits)`` (forward, loss, backward and the
optimizer's update, as ``training.Run._train_step``). Its first ``warmup`` calls run the step eagerly on a side stream
(the GEMM-like kernels autotune there, the optimizer makes its momentum buffers and lr tensors), the next one
captures the step into a ``torch.cuda.CUDAGraph`` on static input buffers and every later call copies its batch
into them and replays. The Triton step is built for it: dropout seeds are drawn on the device, SGD reads its lr
from a device tensor (``optim.SGD.sync_lr`` writes a changed schedule there before each replay), and the
cross-entropy checks its targets on the device (``cross_entropy.device_target_check``): nothing in the step reads
back to the host (tests/test_graph_safe.py). A batch of another shape (an epoch's last, smaller one) runs eagerly.

``fallback_reason`` says why a run cannot be captured; the step then runs eagerly, the reason printed once.
``capture`` does the same for a function of static inputs (the benchmarks' graphed training step).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from . import optim
from .kernels import cross_entropy, runtime

WARMUP_STEPS = 3
Step = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def _on_side_stream(call: Callable[[], object]) -> object:
    """``call()`` eagerly on a side stream, as CUDA graph warm-up wants (lazy initialisation off the capture)."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream), cross_entropy.device_target_check():
        result = call()
    torch.cuda.current_stream().wait_stream(stream)
    return result


def capture(call: Callable[[], object], warmup: int = WARMUP_STEPS) -> Callable[[], None]:
    """The replay of ``call`` (no arguments: its inputs are static tensors) captured in a CUDA graph after
    ``warmup`` eager calls on a side stream (autotuning settles there)."""
    for _ in range(warmup):
        _on_side_stream(call)
    graph = torch.cuda.CUDAGraph()
    with cross_entropy.device_target_check(), torch.cuda.graph(graph):
        call()
    return graph.replay


def fallback_reason(device: torch.device, optimizer, *, scaler=None, processes: int = 1) -> str | None:
    """Why a training step on ``device`` with ``optimizer`` (and a GradScaler ``scaler``, over ``processes``
    processes) cannot be captured in a CUDA graph here; None when it can."""
    if runtime.INTERPRETER:
        return "the Triton kernels run in the CPU interpreter (no CUDA device)"
    if device.type != "cuda":
        return f"the step runs on the {device.type}, not a CUDA device"
    if not isinstance(optimizer, optim.SGD):
        return (f"{type(optimizer).__name__} is not alexnet_triton.optim.SGD, whose lr is a device tensor "
                "(a float lr would be baked into the graph)")
    if scaler is not None:
        return "--amp fp16's gradient scaler reads its overflow check on the host"
    if processes > 1:
        return "steps of several processes (data or model parallel) are not captured"
    return None


class GraphedStep:
    """``step`` captured after ``warmup`` eager calls and replayed (see the module docstring); with a
    ``reason`` (``fallback_reason``), every call runs ``step`` eagerly and the first prints the reason (when
    ``announce``)."""

    def __init__(self, step: Step, optimizer, reason: str | None = None, warmup: int = WARMUP_STEPS,
                 announce: bool = True):
        self.step, self.optimizer, self.reason, self.warmup = step, optimizer, reason, warmup
        self.calls = 0
        self.graph: torch.cuda.CUDAGraph | None = None
        self.inputs: tuple[torch.Tensor, torch.Tensor] | None = None
        self.outputs: tuple[torch.Tensor, torch.Tensor] | None = None
        self.announce = announce

    @property
    def captured(self) -> bool:
        return self.graph is not None

    def __call__(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(loss, logits) of one training step on this batch."""
        self.calls += 1
        if self.reason is not None:
            if self.announce and self.calls == 1:
                print(f"cuda graphs: off, {self.reason}; the step runs eagerly", flush=True)
            return self.step(images, labels)
        if self.graph is None and self.calls <= self.warmup:
            return self._on_side_stream(images, labels)
        if self.graph is None:
            self._capture(images, labels)
        elif (images.shape, labels.shape) != (self.inputs[0].shape, self.inputs[1].shape):
            return self.step(images, labels)  # not the captured shape: eager
        else:
            self.inputs[0].copy_(images, non_blocking=True)
            self.inputs[1].copy_(labels, non_blocking=True)
        self.optimizer.sync_lr()  # a schedule's new lr, into the tensor the graph's SGD launch reads
        self.graph.replay()
        return self.outputs

    def _on_side_stream(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return _on_side_stream(lambda: self.step(images, labels))

    def _capture(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        """Capture the step on static device copies of this batch (the capture runs no kernel: the caller
        replays it for this batch)."""
        device = torch.device("cuda", torch.cuda.current_device())
        self.inputs = (images.to(device, copy=True), labels.to(device, copy=True))
        self.graph = torch.cuda.CUDAGraph()
        with cross_entropy.device_target_check(), torch.cuda.graph(self.graph):
            self.outputs = self.step(*self.inputs)
