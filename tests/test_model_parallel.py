"""The paper's two-GPU split (alexnet_triton.model_parallel) on 2 gloo processes against one process: the same
logits, loss and gradients, 3 SGD steps, interchangeable checkpoints, and the bytes each rank moves; 2 pairs of
them data-parallel on 4 processes against one process doing both pairs' work."""

from __future__ import annotations

import json
import math
import os
import shutil
import socket
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import communication
import pandas as pd
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import train
from conftest import _ForbidTorchCompute

from alexnet_triton import ops, optim
from alexnet_triton.architecture import SGD, parameter_shapes
from alexnet_triton.checkpoint import read_checkpoint
from alexnet_triton.kernels import runtime
from alexnet_triton.model import AlexNet
from alexnet_triton.model_parallel import RANKS, Collectives, ModelParallelAlexNet, split_groups
from alexnet_triton.parity import assert_close
from alexnet_triton.training import Run, RunConfig

# The CPU preset's scaled-down 2012 net (tests/test_training.py's TINY): conv1..5 12, 32, 48, 48, 32 channels,
# fc6/fc7 512, 4 classes, 67x67 images (pool5 is 1x1), 4 images a step, dropout on.
TINY = dict(num_classes=4, width=0.125, input_size=67, dropout=0.5)
BATCH, STEPS, SEED = 4, 3, 7
REPO = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _data() -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
    """The initial single-device state_dict (kaiming: the paper's std 0.01 gives near-zero gradients at this
    width), STEPS batches of images and labels."""
    torch.manual_seed(0)
    model = AlexNet("2012", backend="triton", init="kaiming", **TINY)
    images = torch.randn(STEPS, BATCH, 3, TINY["input_size"], TINY["input_size"])
    return model.state_dict(), images, torch.randint(0, TINY["num_classes"], (STEPS, BATCH))


def _train(model, images, labels, gradients, seed: int = SEED) -> list[dict]:
    """STEPS of the paper's SGD from torch.manual_seed(seed) (the dropout seeds); per step logits, loss and the
    gradients as ``gradients(model)`` returns them."""
    torch.manual_seed(seed)
    sgd = optim.SGD(model.parameters(), **SGD)
    steps = []
    for x, y in zip(images, labels, strict=True):
        sgd.zero_grad(set_to_none=True)
        logits = model(x)
        loss = ops.cross_entropy(logits, y)
        loss.backward()
        steps.append(dict(logits=logits.detach(), loss=loss.detach(), grads=gradients(model)))
        sgd.step()
    return steps


def _start(rank: int, port: int, world: int) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    runtime.poison_outputs = True
    dist.init_process_group("gloo", rank=rank, world_size=world)


def _gradients(model: ModelParallelAlexNet) -> dict[str, torch.Tensor]:
    return model.gathered({k: p.grad for k, p in model.named_parameters()})


def _worker(rank: int, port: int, directory: Path) -> None:
    _start(rank, port, 2)
    state, images, labels = _data()
    net = ModelParallelAlexNet(Collectives(), **TINY)
    net.load_full_state_dict(state)
    loaded = net.full_state_dict()
    with _ForbidTorchCompute():
        steps = _train(net, images, labels, _gradients)
        first_step = net.comm.transfers[:len(net.comm.transfers) // STEPS]
        net.eval()
        evaluated = net(images[0]).detach()
    saved = net.full_state_dict()
    again = ModelParallelAlexNet(Collectives(), **TINY)
    again.load_full_state_dict(saved)
    hybrid = ModelParallelAlexNet(Collectives(), scheme="hybrid", **TINY)
    hybrid.load_full_state_dict(state)
    with _ForbidTorchCompute():
        steps = dict(split=steps, hybrid=_train(hybrid, images, labels, _gradients))
    saved = dict(split=saved, hybrid=hybrid.full_state_dict())
    odd = ModelParallelAlexNet(Collectives(), scheme="hybrid", **TINY)  # 3 images: one rank gets a zero image
    odd.load_full_state_dict(state)
    with _ForbidTorchCompute():
        odd_steps = _train(odd, images[:1, :3], labels[:1, :3], _gradients)
    lrn = {}  # eval-mode logits of the first batch at the initial weights, and the calls of that forward
    for boundary in ("exchange", "column"):
        lrn[boundary] = ModelParallelAlexNet(Collectives(), lrn=boundary, **TINY)
        lrn[boundary].load_full_state_dict(state)
        lrn[boundary] = (lrn[boundary].eval()(images[0]).detach(), lrn[boundary].comm.transfers)
    torch.save(dict(loaded=loaded, steps=steps, evaluated=evaluated, saved=saved, reloaded=again.full_state_dict(),
                    transfers=first_step, counted=communication.counted_step(BATCH, **TINY), lrn=lrn,
                    odd=odd_steps), directory / f"rank{rank}.pt")
    dist.destroy_process_group()


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory) -> list[dict]:
    directory = tmp_path_factory.mktemp("split")
    mp.spawn(_worker, args=(_free_port(), directory), nprocs=2)
    return [torch.load(directory / f"rank{rank}.pt", weights_only=False) for rank in (0, 1)]


@pytest.fixture(scope="module")
def one_process() -> tuple[AlexNet, list[dict]]:
    state, images, labels = _data()
    model = AlexNet("2012", backend="triton", **TINY)
    model.load_state_dict(state)
    return model, _train(model, images, labels, lambda m: {k: p.grad.clone() for k, p in m.named_parameters()})


@pytest.mark.parametrize("scheme", ["split", "hybrid"])
def test_two_ranks_compute_one_process_s_logits_loss_gradients_and_3_sgd_steps(two_ranks, one_process, scheme):
    """Dropout on: the same seeds give the same masks. Every rank holds the whole logits (fc8 is replicated).
    The hybrid's convolutions see half the batch each, their gradients summed over the ranks."""
    model, expected = one_process
    state = model.state_dict()
    for rank, result in enumerate(two_ranks):
        for step, (ours, theirs) in enumerate(zip(result["steps"][scheme], expected, strict=True)):
            assert_close(ours["logits"], theirs["logits"], f"rank {rank} step {step + 1} logits")
            assert_close(ours["loss"], theirs["loss"], f"rank {rank} step {step + 1} loss")
            assert ours["grads"].keys() == theirs["grads"].keys()
            for key in theirs["grads"]:
                assert_close(ours["grads"][key], theirs["grads"][key], f"rank {rank} step {step + 1} {key}.grad")
        for key in state:
            assert_close(result["saved"][scheme][key], state[key], f"rank {rank} {key} after {STEPS} steps")
    assert expected[0]["loss"] != expected[1]["loss"]  # the steps train


def test_the_hybrid_takes_an_odd_batch(two_ranks):
    """3 images: rank 1's half is padded with a zero image, dropped after the gather, and given no gradient."""
    state, images, labels = _data()
    model = AlexNet("2012", backend="triton", **TINY)
    model.load_state_dict(state)
    expected = _train(model, images[:1, :3], labels[:1, :3], lambda m: {k: p.grad for k, p in m.named_parameters()})
    for rank, result in enumerate(two_ranks):
        (ours,), (theirs,) = result["odd"], expected
        assert ours["logits"].shape == (3, TINY["num_classes"])
        for name in ("logits", "loss"):
            assert_close(ours[name], theirs[name], f"rank {rank} {name}")
        for key in theirs["grads"]:
            assert_close(ours["grads"][key], theirs["grads"][key], f"rank {rank} {key}.grad")


def test_checkpoints_are_the_single_device_state_dict(two_ranks, one_process):
    """Scatter then gather returns a one-process state_dict bitwise; the gathered one loads into AlexNet and
    evaluates there to the split net's eval-mode logits."""
    model, _ = one_process
    initial, _, _ = _data()
    for result in two_ranks:
        assert all(torch.equal(result["loaded"][key], initial[key]) for key in initial)
        assert all(torch.equal(result["reloaded"][key], value) for key, value in result["saved"]["split"].items())
    single = AlexNet("2012", backend="triton", **TINY)
    single.load_state_dict(two_ranks[0]["saved"]["split"])
    assert_close(single.eval()(_data()[1][0]).detach(), two_ranks[0]["evaluated"], "eval logits")


def _split_bytes() -> dict[tuple[str, str, str], int]:
    """Bytes each rank sends (and receives) per (layer, collective, pass) in one step of the tiny net, from its
    shapes (4 images, fp32): the LRN halos (2 of conv1's 15x15 and conv2's 7x7 channels), conv3's input (16 of
    conv2's 3x3 pooled channels), fc6's (16 of pool5's 1x1), fc7's and fc8's (256 of 512 neurons); fc8 is
    replicated, so its input's backward is local."""
    n, f = BATCH, 4
    forward = {("lrn1 halo", "send_recv"): 2 * 15 * 15 * n * f, ("lrn2 halo", "send_recv"): 2 * 7 * 7 * n * f,
               ("conv3 input", "all_gather"): 16 * 3 * 3 * n * f, ("fc6 input", "all_gather"): 16 * n * f,
               ("fc7 input", "all_gather"): 256 * n * f, ("fc8 input", "all_gather"): 256 * n * f}
    backward = {(layer, "send_recv" if collective == "send_recv" else "reduce_scatter", "backward"): size
                for (layer, collective), size in forward.items() if layer != "fc8 input"}
    return {**{(layer, collective, "forward"): size for (layer, collective), size in forward.items()}, **backward}


def test_the_ranks_exchange_only_where_the_paper_s_gpus_did(two_ranks):
    for rank, result in enumerate(two_ranks):
        counted = {(t.layer, t.collective, t.phase): (t.sent, t.received) for t in result["transfers"]}
        assert len(counted) == len(result["transfers"]) and all(t.rank == rank for t in result["transfers"])
        assert counted == {key: (size, size) for key, size in _split_bytes().items()}


def test_the_communication_table_counts_the_split_the_hybrid_and_ddp_s_gradient_all_reduce(two_ranks):
    """experiments/communication.py's captured step (no kernel runs) at the tiny size: the split's bytes as in a
    real step; DDP's all-reduce hook sees every parameter once (a 2-rank ring all-reduce sends its size once);
    the crossover batch is where the split's bytes per image times the batch reach DDP's."""
    table = pd.DataFrame([row for result in two_ranks for row in result["counted"]]).assign(batch=BATCH)
    split = table[table["scheme"] == "split"]
    assert {(r.layer, r.collective, r.phase): r.sent for r in split[split["rank"] == 1].itertuples()} == \
        _split_bytes()
    ddp = table[(table["scheme"] == "ddp") & (table["rank"] == 0)].groupby("layer")["sent"].sum()
    layers = {}
    for name, shape in parameter_shapes("2012", TINY["width"], TINY["num_classes"], TINY["input_size"]):
        layers[name.split(".")[0]] = layers.get(name.split(".")[0], 0) + 4 * math.prod(shape)
    assert ddp.to_dict() == layers
    # The hybrid: conv gradients all-reduced; fc6's input (pool5: 32 features) gathered over the batch halves.
    convs = {(layer, "all_reduce", "backward"): size for layer, size in layers.items() if layer.startswith("conv")}
    hybrid = {**convs, ("fc6 input", "all_gather", "forward"): BATCH // 2 * 32 * 4,
              ("fc6 input", "reduce_scatter", "backward"): BATCH * 32 * 4 // 2,
              **{key: size for key, size in _split_bytes().items() if key[0] in ("fc7 input", "fc8 input")}}
    rows = table[(table["scheme"] == "hybrid") & (table["rank"] == 0)]
    assert rows.groupby(["layer", "collective", "phase"])["sent"].sum().to_dict() == hybrid  # weight + bias
    summary = communication.summarise(table).set_index("scheme")
    split_bytes, ddp_bytes, fixed = sum(_split_bytes().values()), sum(layers.values()), sum(convs.values())
    assert summary.loc["split", "sent_per_rank"] == split_bytes and summary.loc["ddp", "sent_per_rank"] == ddp_bytes
    assert summary.loc["split", "crossover_batch"] == math.ceil(ddp_bytes / (split_bytes / BATCH))
    assert summary.loc["hybrid", "fixed_per_rank"] == fixed
    assert summary.loc["hybrid", "crossover_batch"] == math.ceil((ddp_bytes - fixed) /
                                                                 ((sum(hybrid.values()) - fixed) / BATCH))
    model = communication.step_model(summary.reset_index())
    for row in model.itertuples():
        assert row.comm_ms == pytest.approx(summary.loc[row.scheme, "sent_per_rank"] /
                                            communication.LINKS[row.link] * 1e3)
        assert row.step_ms == pytest.approx(row.compute_ms + row.comm_ms)


def test_the_communication_cli_refuses_an_odd_batch_in_one_line(capsys):
    with pytest.raises(SystemExit) as stopped:
        communication.main(["--batch", "3"])
    assert stopped.value.code == 2
    assert capsys.readouterr().err.splitlines() == ["error: --batch 3: must be a positive multiple of 2"]


def test_the_paper_s_per_column_lrn_exchanges_no_boundary_channels_and_is_another_function(two_ranks):
    for result in two_ranks:
        (exchange, exchanged), (column, calls) = result["lrn"]["exchange"], result["lrn"]["column"]
        assert {t.layer for t in exchanged} - {t.layer for t in calls} == {"lrn1 halo", "lrn2 halo"}
        assert {t.layer for t in calls} == {"conv3 input", "fc6 input", "fc7 input", "fc8 input"}
        assert not torch.equal(column, exchange)


def test_a_wrong_split_is_refused_with_the_layer_and_its_sizes():
    class TwoRanks(Collectives):
        def __init__(self):
            self.rank, self.size = 0, 2

    with pytest.raises(ValueError, match=r"fc6's 16 -> 257 do not split over 2 ranks"):
        ModelParallelAlexNet(TwoRanks(), width=257 / 4096, input_size=67)  # fc6 4096 x width: 257 neurons
    net = ModelParallelAlexNet(TwoRanks(), **TINY)
    with pytest.raises(ValueError, match=r"features.0.weight has shape \(6, 3, 11, 11\), expected \(12, 3, 11, 11\)"):
        state = AlexNet("2012", backend="triton", **TINY).state_dict()
        net.load_full_state_dict({**state, "features.0.weight": state["features.0.weight"][:6]})


# ---- 2 pairs x 2 data-parallel ranks (4 processes) ----

PAIRS, PAIR_STEPS = 2, 2  # (2 steps: the second's logits see the first's averaged update)


def _pairs_worker(rank: int, port: int, directory: Path) -> None:
    """Rank 2p + c: column c of pair p, on pair p's half of each batch, its dropout stream seeded SEED + p."""
    _start(rank, port, RANKS * PAIRS)
    comm, data = split_groups()
    state, images, labels = _data()
    pair, results = rank // RANKS, {}
    for scheme in ("split", "hybrid"):
        net = ModelParallelAlexNet(comm, scheme=scheme, data=data, **TINY)
        net.load_full_state_dict(state)
        comm.transfers.clear()
        with _ForbidTorchCompute():
            steps = _train(net, images[:PAIR_STEPS].chunk(PAIRS, 1)[pair], labels[:PAIR_STEPS].chunk(PAIRS, 1)[pair],
                           _gradients, SEED + pair)
        results[scheme] = dict(steps=steps, saved=net.full_state_dict(), transfers=list(comm.transfers),
                               own=sum(p.nbytes for p in net.parameters()))
    torch.save(results, directory / f"rank{rank}.pt")
    dist.destroy_process_group()


@pytest.fixture(scope="module")
def pairs(tmp_path_factory) -> list[dict]:
    directory = tmp_path_factory.mktemp("pairs")
    mp.spawn(_pairs_worker, args=(_free_port(), directory), nprocs=RANKS * PAIRS)
    return [torch.load(directory / f"rank{rank}.pt", weights_only=False) for rank in range(RANKS * PAIRS)]


@pytest.fixture(scope="module")
def pairs_in_one_process() -> tuple[list[dict], dict[str, torch.Tensor]]:
    """One process doing both pairs' work: per step, each pair's half with that pair's dropout stream (logits and
    loss per pair), the gradient the mean of the pairs', one SGD step; and the weights after PAIR_STEPS."""
    state, images, labels = _data()
    model = AlexNet("2012", backend="triton", **TINY)
    model.load_state_dict(state)
    streams = [torch.manual_seed(SEED + pair).get_state() for pair in range(PAIRS)]
    sgd = optim.SGD(model.parameters(), **SGD)
    steps = []
    for x, y in zip(images[:PAIR_STEPS], labels[:PAIR_STEPS], strict=True):
        step = dict(logits=[], loss=[], grads={})
        for pair, (xs, ys) in enumerate(zip(x.chunk(PAIRS), y.chunk(PAIRS), strict=True)):
            sgd.zero_grad(set_to_none=True)
            torch.set_rng_state(streams[pair])
            logits = model(xs)
            loss = ops.cross_entropy(logits, ys)
            loss.backward()
            streams[pair] = torch.get_rng_state()
            step["logits"].append(logits.detach())
            step["loss"].append(loss.detach())
            for key, p in model.named_parameters():
                step["grads"][key] = step["grads"].get(key, 0) + p.grad / PAIRS
        for key, p in model.named_parameters():
            p.grad = step["grads"][key].clone()
        steps.append(step)
        sgd.step()
    return steps, model.state_dict()


@pytest.mark.parametrize("scheme", ["split", "hybrid"])
def test_two_data_parallel_pairs_compute_what_one_process_computes_for_both(pairs, pairs_in_one_process, scheme):
    """Each pair's logits and loss on its half; every rank's gradients (gathered over its pair) the mean of the
    pairs'; the weights after 2 steps. Each data group all-reduces its ranks' gradients once a step: every byte of
    the rank's parameters, sent once (2 ranks in a ring)."""
    expected, weights = pairs_in_one_process
    for rank, result in enumerate(pairs):
        pair, ours = rank // RANKS, result[scheme]
        for step, (got, want) in enumerate(zip(ours["steps"], expected, strict=True)):
            assert_close(got["logits"], want["logits"][pair], f"rank {rank} step {step + 1} logits")
            assert_close(got["loss"], want["loss"][pair], f"rank {rank} step {step + 1} loss")
            for key in want["grads"]:
                assert_close(got["grads"][key], want["grads"][key], f"rank {rank} step {step + 1} {key}.grad")
        for key, value in weights.items():
            assert_close(ours["saved"][key], value, f"rank {rank} {key} after {PAIR_STEPS} steps")
        over_pairs = [t for t in ours["transfers"] if t.layer.endswith(" over pairs")]
        assert all(t.collective == "all_reduce" and t.phase == "backward" for t in over_pairs)
        assert sum(t.sent for t in over_pairs) == PAIR_STEPS * ours["own"]
    assert not torch.equal(expected[0]["loss"][0], expected[0]["loss"][1])


def test_an_odd_number_of_processes_is_refused_with_the_count(monkeypatch):
    monkeypatch.setattr(dist, "get_world_size", lambda group=None: 3)
    with pytest.raises(ValueError, match=r"^model parallelism: 3 processes; the split needs a multiple of 2 "):
        split_groups()


# ---- experiments/train.py --parallel model ----

def test_train_py_parallel_model_resumes_a_one_process_run_on_two_torchrun_ranks_as_one_process_would(tmp_path):
    """One process trains 2 steps (the CPU preset, dropout on); torchrun's 2 gloo ranks resume its checkpoint to
    step 3 and one process too: the same weights, momentum and RNG stream (one process's: the split's dropout masks
    are its), and one process evaluates the split's checkpoint to the split's result."""
    config = RunConfig.preset("cpu", num_classes=4, train_count=12, val_count=4, batch_size=4, lr=0.01, dropout=0.5,
                              max_steps=2, out=str(tmp_path / "single"))  # 3 steps an epoch
    Run(config).train()
    shutil.copytree(tmp_path / "single", tmp_path / "split")
    flags = ["--num-classes", "4", "--train-count", "12", "--val-count", "4", "--batch-size", "4", "--lr", "0.01",
             "--dropout", "0.5", "--max-steps", "3", "--parallel", "model", "--resume",
             "--out", str(tmp_path / "split")]
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                    str(_free_port()), str(REPO / "experiments" / "train.py"), *flags], check=True, cwd=REPO,
                   capture_output=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    Run(replace(config, max_steps=3), read_checkpoint(tmp_path / "single", "--resume")).train()
    split, single = (torch.load(tmp_path / name / "checkpoint.pt", weights_only=False) for name in ("split", "single"))
    assert (split["global_step"], split["config"]["parallel"], single["config"]["parallel"]) == (3, "model", "data")
    assert split["model"].keys() == single["model"].keys() and len(split["rng"]) == 1
    for key, value in single["model"].items():
        assert_close(split["model"][key], value, key)
    for index, state in single["optimizer"]["state"].items():
        assert_close(split["optimizer"]["state"][index]["momentum_buffer"], state["momentum_buffer"], f"{index}")
    assert torch.equal(split["rng"][0]["torch"], single["rng"][0]["torch"])
    results = [json.loads((tmp_path / name / "result.json").read_text()) for name in ("split", "single")]
    assert results[0]["parameters"] == results[1]["parameters"]  # the whole net's, not a rank's part
    one = Run(replace(config, out=str(tmp_path / "split")), read_checkpoint(tmp_path / "split", "--eval-only"))
    evaluated = one.evaluate()
    assert evaluated["val_loss"] == pytest.approx(split["result"]["val_loss"], abs=1e-4)
    assert evaluated["val_top1"] == split["result"]["val_top1"]


def test_train_py_parallel_hybrid_on_two_pairs_of_torchrun_ranks_takes_one_process_s_step(tmp_path):
    """4 torchrun ranks, 2 pairs running the 2014 hybrid on half the batch each (dropout off: each pair draws its
    own stream), resume a one-process checkpoint from step 1 to step 2 as one process does: the same weights and
    momentum; the checkpoint holds one RNG state per pair, and one process evaluates it to the pairs' result."""
    config = RunConfig.preset("cpu", num_classes=4, train_count=8, val_count=4, batch_size=4, lr=0.01, max_steps=1,
                              out=str(tmp_path / "single"))  # 2 steps an epoch, dropout 0 (the CPU preset's)
    Run(config).train()
    shutil.copytree(tmp_path / "single", tmp_path / "pairs")
    flags = ["--num-classes", "4", "--train-count", "8", "--val-count", "4", "--batch-size", "4", "--lr", "0.01",
             "--max-steps", "2", "--parallel", "hybrid", "--resume", "--out", str(tmp_path / "pairs")]
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "4", "--master_port",
                    str(_free_port()), str(REPO / "experiments" / "train.py"), *flags], check=True, cwd=REPO,
                   capture_output=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    Run(replace(config, max_steps=2), read_checkpoint(tmp_path / "single", "--resume")).train()
    pairs, single = (torch.load(tmp_path / name / "checkpoint.pt", weights_only=False) for name in ("pairs", "single"))
    assert (pairs["global_step"], pairs["config"]["parallel"], len(pairs["rng"])) == (2, "hybrid", PAIRS)
    for key, value in single["model"].items():
        assert_close(pairs["model"][key], value, key)
    for index, state in single["optimizer"]["state"].items():
        assert_close(pairs["optimizer"]["state"][index]["momentum_buffer"], state["momentum_buffer"], f"{index}")
    evaluated = Run(replace(config, out=str(tmp_path / "pairs")),
                    read_checkpoint(tmp_path / "pairs", "--eval-only")).evaluate()
    assert evaluated["val_loss"] == pytest.approx(pairs["result"]["val_loss"], abs=1e-4)


@pytest.mark.parametrize("parallel", ["model", "hybrid"])
def test_train_py_model_parallel_on_an_odd_number_of_ranks_is_one_error_line(tmp_path, capsys, parallel):
    assert train.main(["--parallel", parallel, "--out", str(tmp_path)]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"error: --parallel {parallel}: the 2012 net on the triton backend on 2 ranks (or 2N: N model-parallel "
        "pairs, data-parallel; torchrun --nproc_per_node 2 or 2N); this run: 2012, triton, 1 rank"]
