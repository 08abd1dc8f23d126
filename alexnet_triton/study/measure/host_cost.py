"""The host's share of a training step: microseconds of Python per step and per launch spent before Triton's
launcher, measured on this machine's CPU without a GPU.

A training step (forward, cross-entropy, backward, SGD) runs in GPU mode with everything real except the GPU:
CPU tensors stand in for CUDA ones, and each ``runtime.launch`` does all it does on a GPU (config fitting, the
pick rule, the grid) and stops where Triton's launcher (``JITFunction.run``, ``Autotuner.run``) would take over.
Launches are planned for an H100 (``runtime.target``, its shared memory per block). The PyTorch ops of a step
(allocations, views, a few layout copies) run on the CPU, so the net is small by default (width 1/8, 67x67 input,
batch 3: the tests' scaled 2012 net, the same kernels and launches as at full size; their copies cost microseconds):
the host's work per launch does not grow with the tensors. Timed per step: the whole step (this project's Python,
PyTorch's dispatch and autograd engine), the time inside ``runtime.launch``, and this project's output allocations
(``runtime.new_output``: the CPU's ``torch.empty``; the CUDA caching allocator costs a few microseconds per
allocation too). Not here: Triton's launcher and the driver (they need a GPU).

The step is the measuring thread's CPU time (``time.thread_time``), not wall time: on a shared machine a wall clock
also counts the time other processes held the core. The calls' totals come from a second pass over as many steps,
each call timed with ``time.perf_counter`` (a thread_time call itself costs microseconds under load: around each
of ~100 calls it would inflate what it measures; a call of ~10 us is rarely preempted). The medians over the timed
steps are reported, with the machine's load average (a loaded machine still slows a thread through shared caches).
"""

from __future__ import annotations

import contextlib
import os
import platform
import statistics
import time
from collections.abc import Iterator
from pathlib import Path
from unittest import mock

import torch
import triton

from ... import ops, optim
from ...architecture import SGD
from ...kernels import cross_entropy, runtime
from ...model import AlexNet
from ..registries.gpus import CAPTURED

H100_SHARED_PER_BLOCK = 232448  # bytes of shared memory one block may use on sm_90 (opt-in maximum)
# The tests' scaled nets: the smallest input that keeps a 1x1 map after pool5 at width 1/8.
SCALED_INPUT = {"2012": 67, "torchvision": 63}
REPORT = Path("host") / "host_cost.csv"  # under the reports folder
COLUMNS = ["variant", "width", "input_size", "batch", "layout", "steps", "launches_per_step", "step_us", "launch_us",
           "allocation_us", "dispatch_us", "step_us_per_launch", "launch_us_per_launch", "load_average", "measured_on"]


class _Timer:
    """Wraps a function: its calls' total wall time (seconds, ``time.perf_counter``) and count."""

    def __init__(self, function):
        self.function, self.seconds, self.calls = function, 0.0, 0

    def __call__(self, *args, **kwargs):
        start = time.perf_counter()
        try:
            return self.function(*args, **kwargs)
        finally:
            self.seconds += time.perf_counter() - start
            self.calls += 1


@contextlib.contextmanager
def _without_the_gpu() -> Iterator[None]:
    """Inside it, launches stop at Triton's launcher and are planned for an H100."""
    if runtime.INTERPRETER:
        raise RuntimeError("host cost needs ALEXNET_TRITON_MODE=gpu and TRITON_INTERPRET unset before "
                           "alexnet_triton is imported (it measures the GPU path's dispatch)")
    with contextlib.ExitStack() as stack:
        stack.enter_context(mock.patch.object(triton.runtime.jit.JITFunction, "run", lambda *a, **k: None))
        stack.enter_context(mock.patch.object(triton.runtime.autotuner.Autotuner, "run", lambda *a, **k: None))
        stack.enter_context(mock.patch.object(runtime, "_shared_limit", lambda: H100_SHARED_PER_BLOCK))
        # CPU tensors stand in for CUDA ones (checks.check_device lets them pass, as under capture_launches)
        stack.enter_context(mock.patch.object(runtime, "capturing", lambda: True))
        stack.enter_context(runtime.target(CAPTURED.sms))
        stack.enter_context(cross_entropy.device_target_check())  # what a GPU step runs (no host read)
        yield


@contextlib.contextmanager
def _calls_timed() -> Iterator[tuple[_Timer, _Timer]]:
    """Inside it, ``runtime.launch`` and ``runtime.new_output`` are wrapped in the yielded timers."""
    launch, allocate = _Timer(runtime.launch), _Timer(runtime.new_output)
    with mock.patch.object(runtime, "launch", launch), mock.patch.object(runtime, "new_output", allocate):
        yield launch, allocate


def measure_host_cost(variant: str = "2012", batch: int = 3, steps: int = 20, warmup: int = 2,
                      channels_last: bool = True, width: float = 0.125, input_size: int | None = None) -> dict:
    """One row of ``COLUMNS``: medians over ``steps`` training steps (fp32 parameters, the model's dropout and the
    paper's SGD, ``architecture.SGD``, 10 classes) after ``warmup`` steps, in microseconds: the step unwrapped,
    then the calls' totals over ``steps`` more. input_size None: ``SCALED_INPUT``. dispatch_us = step_us -
    allocation_us."""
    torch.manual_seed(0)
    layout = torch.channels_last if channels_last else torch.contiguous_format
    model = AlexNet(variant, 10, "triton", width=width, input_size=input_size or SCALED_INPUT[variant]).to(
        memory_format=layout)
    sgd = optim.SGD(model.parameters(), **SGD)
    size = model.input_size
    x = torch.randn(batch, 3, size, size).contiguous(memory_format=layout)
    target = torch.randint(10, (batch,))

    def step() -> None:
        loss = ops.cross_entropy(model(x), target)
        sgd.zero_grad(set_to_none=True)
        loss.backward()
        sgd.step()

    step_seconds, calls = [], []
    with _without_the_gpu():
        for index in range(warmup + steps):
            start = time.thread_time()
            step()
            if index >= warmup:
                step_seconds.append(time.thread_time() - start)
        with _calls_timed() as (launch, allocate):
            for _ in range(steps):
                launch.seconds = allocate.seconds = 0.0
                launch.calls = 0
                step()
                calls.append((launch.seconds, allocate.seconds, launch.calls))
    step_us = statistics.median(step_seconds) * 1e6
    launch_us, allocation_us = (statistics.median(c[i] for c in calls) * 1e6 for i in range(2))
    launches = calls[-1][2]
    times = dict(step_us=step_us, launch_us=launch_us, allocation_us=allocation_us, dispatch_us=step_us - allocation_us,
                 step_us_per_launch=step_us / launches, launch_us_per_launch=launch_us / launches)
    return dict(variant=variant, width=width, input_size=size, batch=batch,
                layout="channels_last" if channels_last else "nchw", steps=steps, launches_per_step=launches,
                **{k: round(v, 1) for k, v in times.items()}, load_average=round(os.getloadavg()[0], 1),
                measured_on=measured_on())


def measured_on() -> str:
    """The label of a CPU measurement: this CPU, and that no GPU was involved."""
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo") as info:
            cpu = next((line.split(":", 1)[1].strip() for line in info if line.startswith("model name")), cpu)
    return f"CPU ({cpu}, thread CPU time per step), no GPU: launches stop before Triton's launcher"
