"""The torch.compile counter on hand-countable models: what Inductor's partitioner saves for backward, and the
kernels and bytes of the code it generates (CPU target). One compile with code generation per session (about 30 s
on 2 CPU cores, mostly the C++ compiler); the partition alone takes seconds."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from alexnet_triton.study.measure import compiled

FP32 = 4


def small_net() -> nn.Sequential:
    """conv 3->4 (3x3) -> ReLU -> 3x3/2 max-pool -> flatten -> fc 16->5 -> ReLU -> dropout -> fc 5->3."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.MaxPool2d(3, 2), nn.Flatten(), nn.Linear(16, 5),
                         nn.ReLU(), nn.Dropout(0.5), nn.Linear(5, 3))


def test_partition_of_a_small_net_by_hand():
    """Images [2, 3, 8, 8]: conv map 6x6, pooled 2x2. What the backward needs, at the smallest cut: the conv's
    input (its weight gradient), the ReLU's sign as a bool mask, the pool's int8 window offsets; fc1's input,
    its ReLU mask and the dropout's bool mask; fc2's input. Weights are parameters (the biases are not needed)."""
    partition = compiled.partition_of(small_net(), torch.randn(2, 3, 8, 8))
    saved = compiled.partitioned_saved(partition, ["conv", "fc1", "fc2"])
    activations = [(s.group, s.description, s.nbytes) for s in saved if not s.parameter]
    assert sorted(activations) == sorted([
        ("conv", "2x3x8x8 float32", 2 * 3 * 8 * 8 * FP32), ("conv", "2x4x6x6 bool", 2 * 4 * 6 * 6),
        ("conv", "2x4x2x2 int8", 2 * 4 * 2 * 2),
        ("fc1", "2x16 float32", 2 * 16 * FP32), ("fc1", "2x5 bool", 2 * 5), ("fc1", "2x5 bool", 2 * 5),
        ("fc2", "2x5 float32", 2 * 5 * FP32)])
    assert sorted((s.group, s.description) for s in saved if s.parameter) == [
        ("conv", "4x3x3x3 float32"), ("fc1", "5x16 float32"), ("fc2", "3x5 float32")]


def test_compile_modes_and_bad_compile_mode():
    assert compiled.compile_mode_options("default") == {}
    assert compiled.compile_mode_options("max-autotune")["max_autotune"]
    with pytest.raises(ValueError, match="compile_mode must be one of"):
        compiled.compile_mode_options("fast")


@pytest.fixture(scope="module")
def relu_matmul_step():
    """loss = relu(x @ w).sum(), x [8, 16], w [16, 32] requiring grad, then an in-place update w -= 0.1 * grad:
    compiled with code generation once, their forward, backward and update recorded, and the partition Inductor
    made of the step."""
    x, w = torch.randn(8, 16), torch.randn(16, 32, requires_grad=True)
    recorder, partitioner = compiled.KernelRecorder(), compiled.RecordingPartitioner()
    with compiled.fresh_inductor("default", custom_partitioner_fn=partitioner), compiled.recording_kernels(recorder):
        loss = torch.compile(lambda a, b: (a @ b).relu().sum())(x, w)
        loss.backward()
        expected = w.detach() - 0.1 * x.t() @ ((x @ w) > 0).float()
        recorder.phase = "optimizer"
        with torch.no_grad():
            torch.compile(lambda p, g: p.sub_(0.1 * g))(w, w.grad)
    torch.testing.assert_close(w.detach(), expected)
    return recorder, partitioner.partitions


def test_kernels_and_bytes_of_a_compiled_step_by_hand(relu_matmul_step):
    """Forward: the GEMM (x, w, y = x @ w), then one loop nest for the ReLU summed (y, the 0-d loss) and one for
    the ReLU's mask kept for backward (y, mask [8, 32] bool); backward: one loop nest for the masked gradient
    (mask, the 0-d seed, g [8, 32]) and the weight-gradient GEMM (x^T, g, dw); the update: one loop nest."""
    recorder, _ = relu_matmul_step
    x, w, y, mask = 8 * 16 * FP32, 16 * 32 * FP32, 8 * 32 * FP32, 8 * 32
    assert [(k.phase, k.source, k.name, k.bytes) for k in recorder.kernels] == [
        ("forward", "extern", "mm", x + w + y),
        ("forward", "inductor", "fused_relu_sum", y + FP32),
        ("forward", "inductor", "fused_relu_threshold_backward", y + mask),
        ("backward", "inductor", "fused_expand_threshold_backward", mask + FP32 + y),
        ("backward", "extern", "mm", x + y + w),
        ("optimizer", "inductor", "fused_copy__mul_sub", w + w)]  # reads w and its gradient, writes w in place: w once
    # the C++ backend puts the forward's two loop nests into one function
    assert recorder.cpp_functions == {"forward": 1, "backward": 1, "optimizer": 1}


def test_the_compiled_step_saved_what_the_partition_says(relu_matmul_step):
    """x (as x^T, a view of the input) and the bool mask: not y, which the backward does not need."""
    _, partitions = relu_matmul_step
    saved = compiled.partitioned_saved(partitions[0], [])
    assert sorted((s.description, s.nbytes, s.parameter) for s in saved) == [
        ("16x8 float32", 8 * 16 * FP32, False), ("8x32 bool", 8 * 32, False)]
