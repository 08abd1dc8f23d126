"""The launch and traffic counter: its rule on hand-countable graphs, a training step's phases for the Triton and
eager providers, and the torch.compile provider's place in the tables (its counter: test_compiled.py)."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from alexnet_triton import ops
from alexnet_triton.kernels import runtime
from alexnet_triton.study.measure import traffic
from alexnet_triton.study.registries.providers import PROVIDERS

# Scaled-down topologies (width 1/8, smallest input with a 1x1 map after pool5), as in test_model.py.
SCALED = {"2012": dict(width=0.125, input_size=67, num_classes=10),
          "torchvision": dict(width=0.125, input_size=63, num_classes=10)}
FP32 = 4


@pytest.fixture(autouse=True)
def no_poison(monkeypatch):
    """The tests' NaN fill of kernel outputs is an ATen op of its own: not part of what is counted here."""
    monkeypatch.setattr(runtime, "poison_outputs", False)


def summary_of(launches):
    return [(launch.phase, launch.source, launch.name, launch.bytes) for launch in launches]


def test_pytorch_ops_count_by_the_rule():
    a, b = torch.randn(3, 4), torch.randn(3, 4)
    launches = []
    with traffic.record_launches("forward", launches):
        c = torch.relu(a + b)  # add: a, b, a + b; relu: its input and output
        c.add_(a)  # in place: c once, a once
        c.view(12).t()  # views: no kernel
        torch.ones(()) * 2  # only 0-d tensors: scalar bookkeeping
    size = 12 * FP32
    assert summary_of(launches) == [("forward", "aten", "add", 3 * size), ("forward", "aten", "relu", 2 * size),
                                    ("forward", "aten", "add_", 2 * size)]


def test_triton_launches_are_counted_without_running():
    """linear x [4, 8] @ w [5, 8]^T + b [5], then dropout of y [4, 5]: one kernel each way per op."""
    x, w, b = (torch.randn(*shape, requires_grad=True) for shape in ((4, 8), (5, 8), (5,)))
    dy = torch.ones(4, 5)
    launches = []
    with traffic.record_launches("forward", launches):
        y = ops.dropout(ops.linear(x, w, b), p=0.5, seed=7)
    with traffic.record_launches("backward", launches):
        y.backward(dy)
    x_, w_, b_, y_, seed = 32 * FP32, 40 * FP32, 5 * FP32, 20 * FP32, 8
    assert summary_of(launches) == [
        ("forward", "triton", "linear_forward", x_ + w_ + b_ + y_),
        ("forward", "aten", "full", seed),  # the given seed as the int64 [1] device tensor the kernels read
        ("forward", "triton", "dropout", 2 * y_ + seed),  # the scale 1/(1-p) is a 0-d op
        ("backward", "triton", "dropout", 2 * y_ + seed),  # the backward regenerates the mask from the saved seed
        ("backward", "triton", "linear_input_grad", y_ + w_ + x_),  # dy, w -> dx
        ("backward", "triton", "linear_weight_grad", y_ + x_ + w_ + b_),  # dy, x -> dw, db
    ]


# Triton launches per phase of a step, by hand. 2012 forward: 5 convs, 2 LRN + pool, 1 pool, 3 linears (ReLU
# and dropout fused), cross-entropy (2: rows, then their mean); backward: conv1 weight grad + its partial sums,
# conv2-5 input grad, weight grad + its partial sums each, the partial sums of conv3's and conv4's bias grad
# (summed by conv4's and conv5's input grad, which also apply their ReLU mask: no output-grad pass), 2 LRN + pool
# and 1 pool, each + the partial sums of the bias grad of the conv before it (the pool block adds that bias: conv1,
# conv2 and conv5 have no output-grad pass either), 3 x (input, weight grad),
# cross-entropy; optimizer: one multi-tensor SGD launch for the 16 fp32 parameters (kernels/sgd.py: one per dtype
# and MAX_TENSORS). torchvision: 3 pools, no LRN, and the standalone dropout before fc6 (the one before fc7 is
# fc6's fused epilogue). conv1 runs directly: its space-to-depth form is for channels_last, not exact fp32.
TRITON_LAUNCHES = {"2012": {"forward": 13, "backward": 29, "optimizer": 1},
                   "torchvision": {"forward": 14, "backward": 30, "optimizer": 1}}
# All PyTorch is asked to launch: the two dropout seeds drawn on the device (2012: fc6's and fc7's fused ones;
# torchvision: the standalone one and fc6's), the range check of the integer targets, and the SGD's lr as the
# device tensor its kernel reads (made at a new optimizer's first step, as here; rewritten only when lr changes).
ATEN_OPS = [("forward", "randint"), ("forward", "randint"), ("forward", "aminmax"), ("optimizer", "full")]


@pytest.mark.parametrize("variant", ["2012", "torchvision"])
def test_a_training_step_of_both_runtime_providers(variant):
    triton = traffic.count_training_step(variant, "triton", 2, **SCALED[variant])
    per_phase = triton[triton.source == "triton"].groupby("phase").size().to_dict()
    assert per_phase == TRITON_LAUNCHES[variant]
    aten = triton[triton.source == "aten"]
    assert list(zip(aten.phase, aten.name, strict=True)) == ATEN_OPS
    eager = traffic.count_training_step(variant, "eager", 2, **SCALED[variant])
    assert set(eager.source) == {"aten"} and list(eager.phase.unique()) == list(traffic.PHASES)
    names = eager.groupby("name").size()
    assert names["convolution"] == names["convolution_backward"] == 5
    assert set(triton.target) == {"cuda"} and set(eager.target) == {"cpu"}
    summary = traffic.summarise(pd.concat([triton, eager])).set_index(["provider", "phase"])
    assert summary.loc[("triton", "step"), "launches"] == sum(TRITON_LAUNCHES[variant].values()) + len(ATEN_OPS)
    assert summary.loc[("triton", "step"), "launches_to_eager"] == round(
        summary.loc[("triton", "step"), "launches"] / len(eager), 3)
    assert (summary.loc["eager", "mb_to_eager"] == 1).all() and "mb_to_compiled" not in summary


@pytest.mark.parametrize("provider", ["triton", "eager"])
def test_counts_repeat(provider):
    first, second = (traffic.count_training_step("2012", provider, 2, **SCALED["2012"]) for _ in range(2))
    assert first.equals(second)


# Made-up torch.compile launches (the real ones take minutes of C++ compilation: test_compiled.py counts a small
# step by hand): one extern call and one generated kernel per phase.
COMPILED_LAUNCHES = [traffic.Launch(phase, source, name, 1000) for phase in traffic.PHASES
                     for source, name in (("extern", "mm"), ("inductor", "fused_relu"))]


@pytest.fixture
def every_provider(monkeypatch):
    """The torchvision step at batch 1 of every provider, torch.compile's launches made up."""
    monkeypatch.setattr(traffic, "compiled_step", lambda *args: (COMPILED_LAUNCHES, {"forward": 1}))
    return pd.concat([traffic.count_training_step("torchvision", provider, 1, **SCALED["torchvision"])
                      for provider in PROVIDERS])


def test_the_compiled_provider_in_the_summary(every_provider):
    compiled = every_provider[every_provider.provider == "compiled"]
    assert set(compiled.target) == {"cpu"} and len(compiled) == len(COMPILED_LAUNCHES)
    summary = traffic.summarise(every_provider).set_index(["provider", "phase"])
    assert list(summary.index.get_level_values("provider").unique()) == ["triton", "eager", "compiled"]
    assert summary.loc[("compiled", "step"), "launches"] == 6
    for provider in PROVIDERS:  # the made-up forward: 2 launches, 2000 bytes
        row = summary.loc[(provider, "forward")]
        forward_bytes = every_provider.query("provider == @provider and phase == 'forward'").bytes.sum()
        assert row.launches_to_compiled == round(row.launches / 2, 3)
        assert row.mb_to_compiled == round(forward_bytes / 2000, 3)
    assert (summary.loc["compiled", ["launches_to_compiled", "mb_to_compiled"]] == 1).all().all()


def test_plot(every_provider, tmp_path):
    summary = traffic.summarise(every_provider)
    assert traffic.plot_traffic(summary, tmp_path / "traffic.png").stat().st_size > 0


def test_unknown_provider():
    with pytest.raises(ValueError, match="provider must be one of"):
        traffic.count_training_step("2012", "jit", 1)
