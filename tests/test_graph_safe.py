"""A Triton training step can be captured in one CUDA graph: every per-step value a kernel needs is in a device
tensor (the launch records of consecutive steps differ only in tensor contents) and the step reads nothing back to
the host. Provable without a GPU: the runtime's capture mode records the launches, a dispatch mode sees every read."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from alexnet_triton import graphs, ops, optim
from alexnet_triton.kernels import cross_entropy, runtime
from alexnet_triton.model import AlexNet
from alexnet_triton.ops import library
from alexnet_triton.study.measure.host_cost import COLUMNS as HOST_COST_COLUMNS
from alexnet_triton.training import RunConfig

REPO = Path(__file__).resolve().parents[1]
# The scaled 2012 net of tests/test_model.py (width 1/8, the smallest input that keeps a 1x1 map after pool5).
WIDTH, INPUT_SIZE, BATCH, CLASSES = 0.125, 67, 3, 10


def scaled_net(variant: str = "2012") -> tuple[AlexNet, optim.SGD]:
    torch.manual_seed(0)
    model = AlexNet(variant, CLASSES, "triton", dropout=0.5, init="kaiming", width=WIDTH,
                    input_size=INPUT_SIZE if variant == "2012" else 63)
    return model, optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)


def batch(step: int, size: int = INPUT_SIZE) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(100 + step)
    return torch.randn(BATCH, 3, size, size, generator=gen), torch.randint(CLASSES, (BATCH,), generator=gen)


def train_step(model, sgd, x, target) -> torch.Tensor:
    loss = ops.cross_entropy(model(x), target)
    sgd.zero_grad(set_to_none=True)
    loss.backward()
    sgd.step()
    return loss


def launch_signature(value, where: str = "") -> object:
    """What a launch argument fixes when a CUDA graph captures it: a tensor's shape, strides, dtype and device (its
    contents are free to change between replays); any other value itself. Tuples element by element."""
    if isinstance(value, torch.Tensor):
        return ("tensor", tuple(value.shape), value.stride(), value.dtype, value.device.type)
    if isinstance(value, tuple):
        return tuple(launch_signature(v) for v in value)
    return (type(value).__name__, value)


def record_signatures(records: list[runtime.LaunchRecord]) -> list[tuple]:
    return [(r.kernel.fn.__name__, r.candidates, {name: launch_signature(v) for name, v in r.args.items()})
            for r in records]


def first_difference(a: list[tuple], b: list[tuple]) -> str | None:
    """The first launch (and argument) where two steps' signatures differ, in words; None when they are equal."""
    if len(a) != len(b):
        return f"{len(a)} launches, then {len(b)}"
    for index, (one, other) in enumerate(zip(a, b, strict=True)):
        if one[:2] != other[:2]:
            return f"launch {index}: {one[0]} then {other[0]}"
        changed = {k: (v, other[2].get(k)) for k, v in one[2].items() if other[2].get(k) != v}
        if changed or one[2].keys() != other[2].keys():
            return f"launch {index} ({one[0]}): {changed}"
    return None


@pytest.mark.parametrize("variant", ["2012", "torchvision"])
def test_consecutive_steps_launch_the_same_kernels_with_the_same_non_tensor_arguments(variant):
    """Steps 2 and 3 (the first allocates the momentum buffers: a warm-up step) of the scaled net, launches
    recorded not run: the same kernels, configs and every non-tensor argument; tensors differ only in contents.
    A drawn dropout seed or a scheduled lr that reached a kernel as a Python number would differ here."""
    model, sgd = scaled_net(variant)
    size = INPUT_SIZE if variant == "2012" else 63
    steps = []
    with runtime.capture_launches() as records:
        for step in range(3):
            sgd.param_groups[0]["lr"] = 0.01 / (step + 1)  # a schedule between steps
            train_step(model, sgd, *batch(step, size))
            steps.append(record_signatures(records))
            del records[:]
    kernels = [name for name, *_ in steps[1]]
    assert kernels.count("_dropout_kernel") + sum("linear_forward" in k for k in kernels) >= 2
    assert kernels.count("_sgd_step_kernel") == 1, "one SGD launch for the model's one parameter group"
    assert first_difference(steps[1], steps[2]) is None, first_difference(steps[1], steps[2])


def test_consecutive_inference_passes_launch_the_same_kernels_with_the_same_non_tensor_arguments():
    model, _ = scaled_net()
    model.eval()
    passes = []
    with runtime.capture_launches() as records, torch.no_grad():
        for step in range(2):
            model(batch(step)[0])
            passes.append(record_signatures(records))
            del records[:]
    assert len(passes[0]) > 10 and first_difference(*passes) is None, first_difference(*passes)


def test_the_comparison_sees_a_changed_scalar():
    """The check above can fail: a Python number that changes between calls (here dropout's p) is seen."""
    x = torch.randn(4, 5)
    signatures = []
    for p in (0.5, 0.25):
        with runtime.capture_launches() as records:
            ops.dropout(x, p, True)
        signatures.append(record_signatures(records))
    assert "'p'" in first_difference(*signatures)


# Reads of a tensor's value into Python, and the ops whose only use in a step would be such a read.
HOST_READS = {"_local_scalar_dense", "item", "aminmax", "equal", "is_nonzero", "tolist", "_assert_async"}


class FailOnHostRead(TorchDispatchMode):
    """Raise on any ATen op that reads a tensor value back to the host (``.item()``, ``int(t)``, ``bool(t)``)."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.overloadpacket.__name__ in HOST_READS:
            raise AssertionError(f"host read of a tensor value inside the step: {func}")
        return library.run_under(self, func, args, kwargs)  # inside this project's operators too


def test_a_training_step_reads_nothing_back_to_the_host(monkeypatch):
    """A warm-up step (constants computed once, momentum buffers made), then a checked step, kernels run: no op
    reads a tensor value into Python, with the cross-entropy's target check on the device."""
    monkeypatch.setattr(runtime, "poison_outputs", False)  # the tests' NaN fill is not part of a step
    model, sgd = scaled_net()
    with cross_entropy.device_target_check():
        train_step(model, sgd, *batch(0))
        with FailOnHostRead():
            loss = train_step(model, sgd, *batch(1))
    assert torch.isfinite(loss)
    with pytest.raises(AssertionError, match="host read"), FailOnHostRead():
        train_step(model, sgd, *batch(2))  # the default host check of the targets reads aminmax's result


@pytest.mark.parametrize("options", [{}, dict(label_smoothing=0.1), dict(ignore_index=2)], ids=str)
def test_the_device_target_check_gives_a_bad_row_a_nan_loss(options, no_torch_fallback):
    logits = torch.randn(4, 5, generator=torch.Generator().manual_seed(3), requires_grad=True)
    good, bad = torch.tensor([0, 4, 2, 1]), torch.tensor([0, 5, 2, 1])
    with no_torch_fallback():
        with pytest.raises(ValueError, match="class index 5"):
            ops.cross_entropy(logits, bad, **options)
        with cross_entropy.device_target_check(), FailOnHostRead():
            rows = ops.cross_entropy(logits, bad, reduction="none", **options)
            mean = ops.cross_entropy(logits, bad, **options)
            (grad,) = torch.autograd.grad(rows, logits, torch.ones(4))
        expected = ops.cross_entropy(logits, good, reduction="none", **options)
        (expected_grad,) = torch.autograd.grad(expected, logits, torch.ones(4))
    assert torch.isnan(rows[1]) and torch.isnan(mean)
    keep = torch.tensor([True, False, True, True])
    assert torch.equal(rows[keep], expected[keep])
    assert torch.equal(grad[keep], expected_grad[keep])


def test_host_cost_cli_writes_a_csv_labelled_as_a_cpu_measurement(tmp_path):
    """experiments/host_cost.py (GPU mode, launches stopped before Triton's launcher; its own process)."""
    out = tmp_path / "host.csv"
    done = subprocess.run([sys.executable, str(REPO / "experiments" / "host_cost.py"), "--steps", "1",
                           "--variants", "2012", "--out", str(out)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    table = pd.read_csv(out)
    row = table.iloc[0]
    assert list(table.columns) == HOST_COST_COLUMNS and len(table) == 1
    # step_us is the thread's CPU time, launch_us the wall time of the calls in a second pass (the module's
    # docstring): on a loaded machine the second can exceed the first, so only their own relations are checked
    assert row.launches_per_step > 20 and row.step_us > 0 and row.launch_us > 0
    assert row.launch_us_per_launch == pytest.approx(row.launch_us / row.launches_per_step, abs=0.06)  # rounded
    assert row.dispatch_us == pytest.approx(row.step_us - row.allocation_us, abs=0.16)  # each rounded to 0.1
    assert row.measured_on.startswith("CPU (") and "no GPU" in row.measured_on



def test_the_step_falls_back_in_the_interpreter_with_its_reason_printed_once(capsys):
    """--cuda-graphs (default on) cannot capture here: every call runs the step eagerly, the reason said once."""
    model, sgd = scaled_net()
    calls = []
    reason = graphs.fallback_reason(torch.device("cpu"), sgd)
    assert reason == "the Triton kernels run in the CPU interpreter (no CUDA device)"
    step = graphs.GraphedStep(lambda x, y: calls.append((x, y)) or (x, y), sgd, reason)
    for i in range(graphs.WARMUP_STEPS + 2):
        assert step(torch.full((1,), i), torch.zeros(1)) == calls[-1]
    assert len(calls) == graphs.WARMUP_STEPS + 2 and not step.captured
    assert capsys.readouterr().out == f"cuda graphs: off, {reason}; the step runs eagerly\n"


def test_every_fallback_reason_is_named(monkeypatch):
    model, sgd = scaled_net()
    monkeypatch.setattr(runtime, "INTERPRETER", False)
    cuda = torch.device("cuda", 0)
    assert "runs on the cpu" in graphs.fallback_reason(torch.device("cpu"), sgd)
    assert "SGD is not alexnet_triton.optim.SGD" in graphs.fallback_reason(cuda, torch.optim.SGD(model.parameters()))
    assert "gradient scaler" in graphs.fallback_reason(cuda, sgd, scaler=object())
    assert "several processes" in graphs.fallback_reason(cuda, sgd, processes=2)
    assert graphs.fallback_reason(cuda, sgd) is None


def test_train_cli_has_the_cuda_graphs_option_on_by_default():
    spec = importlib.util.spec_from_file_location("train_cli", REPO / "experiments" / "train.py")
    train_cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(train_cli)
    parser = train_cli.build_parser()
    assert parser.parse_args(["--no-cuda-graphs"]).cuda_graphs is False
    assert RunConfig().cuda_graphs and RunConfig.preset("cpu").cuda_graphs
