"""The benchmark study on one CUDA GPU, headline first, in one process: a correctness check of the kernels on the
GPU, the whole network's training step, torchvision's model under use_kernels(), the two-GPU schemes (on a machine
with two), each layer, then the rest of the plan, Triton vs PyTorch eager (cuDNN) vs torch.compile. Rows are flushed
to DIR as they are measured (a killed run leaves what it measured).

    python experiments/gpu_study.py --budget 480 --out DIR   # headline first, within 480 s of wall time
    python experiments/gpu_study.py                          # the whole plan into reports/benchmarks, then the report
    python experiments/gpu_study.py --rehearse [--out DIR]   # the same plan on the CPU (smoke, under 2 minutes)
    python experiments/gpu_study.py --steps two-gpus         # only the steps named (sharing the budget)
    python experiments/make_report.py --benchmarks DIR       # afterwards, on any machine: DIR into reports/

DIR receives summary.txt (device, driver, versions, clocks, the plan, what ran, what was skipped and why),
correctness.csv (``gpu_check.COLUMNS``), model.csv and layers.csv (``benchmark.COLUMNS``), torchvision.csv
(TORCHVISION_COLUMNS) and two_gpus.csv (TWO_GPU_COLUMNS; its header only on one GPU): 6 files.

The plan; each step's cap is a share of the budget (unspent time passes to the next step), and a timing or check
case that would start after its step's cap is skipped and listed in summary.txt. Expected times, one H100/H200
from empty caches (an estimate: written without a GPU):
  check          min(90 s, 19%): ~65 s. The headline tier compiles and autotunes every kernel at batch 128, bf16,
                 channels_last (~52 specialisations: 5 convs x 5 conv candidates, 3 fc layers x 8 linear
                 candidates over 2 epilogues, ~12 element-wise kernels; ~1 s each, then ~0.15 s of do_bench per
                 autotuning candidate, fp64 references ~2 s); the configs tier reruns those compiled candidates
                 (~50 launches, ~3 s); the dtypes tier gets what is left. Its compiles and autotuning are the
                 benchmark's: the Triton timings below start warm.
  network        25%: ~60 s. Triton and eager, inference and training step, eager-launched and replayed from
                 one CUDA graph (train-step-graphed), and Triton's graph with the fc layers' SGD step fused into
                 their weight gradients (train-step-fused-graphed): 7 timings of ~1.5 s (3 warm-up steps, 1 for
                 peak memory, do_bench >= 500 ms) + cuDNN's search ~5 s; torch.compile: 2 graphs
                 (inference, training) at ~20 s each in the default mode. max-autotune (~90 s a graph, with
                 CUDA graphs) is used only when the cap holds 240 s (a budget of ~960 s or more).
  torchvision    10%: ~80 s. torchvision.models.alexnet() (where torchvision imports; else this project's plain-torch
                 copy of its module tree, the rows say which), inference and training step (torch.optim.SGD
                 fused) under use_kernels() first (~35 s: the kernels compile and autotune for its shapes), then
                 eager (~8 s) and torch.compile in the default mode (2 graphs, ~40 s): at --budget 480 the
                 torch.compile rows are skipped.
  two-gpus       7%: ~120 s, with 2 GPUs only (on one, skipped at once, saying why): 2 spawned ranks (NCCL, ~20 s
                 to start), the split, the hybrid and DDP, 3 warm-up and 20 timed steps each, the kernels compiled
                 for each scheme's shapes first (~30 s each): at --budget 480 the split alone, maybe.
  conv           6%: ~15 s. conv1..conv5: forward, input gradient, weight gradient (14 phases), Triton and cuDNN:
                 28 timings of ~0.3 s (3 warm-up calls, do_bench >= 100 ms) + cuDNN's search.
  conv-others    18%: ~60 s. The same by the other providers (torch.compile): 3 graphs per conv (15 compiles,
                 ~4 s each in the default mode); max-autotune-no-cudagraphs (~20 s a graph) only when the cap
                 holds 300 s.
  blocks         5%: ~10 s. LRN + pool blocks, pool5, fc6..fc8: forward and backward, Triton and eager (24 timings).
  rest           what is left: the rest of the full plan (benchmark_cases.layer_plan / model_plan), network first.
So --budget 480 delivers the check, the network, torchvision's model under use_kernels() and eager, and the conv
step in ~200 s of ~320 s of caps (startup ~10 s and a 10 s reserve for the summary outside them). Unknown until a
GPU runs it: the compile times (inductor's, Triton's on sm_90), cuDNN's search, how long do_bench's L2 flush adds
per sample, and everything of the two-GPU step.

Without --budget no cap applies (the check's 90 s excepted), the whole plan runs into reports/benchmarks
(~30-45 minutes), then experiments/make_report.py rebuilds the report. Environment: nothing to set; the kernels
compile with the ptxas bundled with Triton whatever torch.compile sets (benchmark.triton_ptxas).
"""

from __future__ import annotations

import time

START = time.perf_counter()  # the budget counts the imports

import argparse  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from _checkout import REPO  # noqa: E402
from collections.abc import Callable  # noqa: E402
from datetime import datetime, timezone  # noqa: E402
from pathlib import Path  # noqa: E402

OUT = REPO / "reports" / "benchmarks"
CHECK_CAP_S = 90.0
REHEARSAL_BUDGET_S = 90.0
RESERVE_S = 10.0  # kept at the end of a budget for the summary
# step -> (share of the budget, what it runs, expected seconds on an H100/H200 as in the docstring)
STEPS = {
    "check": (0.19, "correctness: Triton vs PyTorch on this device, headline tier first", 65),
    "network": (0.25, "2012 net, inference + training step (graphed; fused update), triton / eager / compiled", 60),
    "torchvision": (0.10, "torchvision's AlexNet, inference + training step, use_kernels() / eager / compiled", 80),
    "two-gpus": (0.07, "2012 net's training step on 2 GPUs: the split, the hybrid, DDP (needs 2 GPUs)", 120),
    "conv": (0.06, "conv1-5 forward, input grad, weight grad, triton / eager", 15),
    "conv-others": (0.18, "conv1-5 forward, input grad, weight grad, torch.compile", 60),
    "blocks": (0.05, "LRN + pool blocks, pool5, fc6-8, forward / backward, triton / eager", 10),
    "rest": (None, "the rest of the full plan, network first", None),
}
# torch.compile's mode per step: the first whose estimate fits the step's cap (else the last)
COMPILE_MODES = {"network": (("max-autotune", 240), ("default", 0)), "torchvision": (("default", 0),),
                 "conv-others": (("max-autotune-no-cudagraphs", 300), ("default", 0)),
                 "rest": (("max-autotune", 600), ("default", 0))}
FILES = ("summary.txt", "correctness.csv", "model.csv", "layers.csv", "torchvision.csv", "two_gpus.csv")


def _device_lines() -> list[str]:
    """Device, driver, versions and clocks (nvidia-smi where there is one)."""
    import torch
    import triton

    from alexnet_triton.study.benchmarks import benchmark

    lines = [f"device: {benchmark.conditions().device}",
             f"versions: python {platform.python_version()}, torch {torch.__version__} (CUDA {torch.version.cuda}), "
             f"triton {triton.__version__}, cuDNN {torch.backends.cudnn.version()}"]
    query = "driver_version,clocks.sm,clocks.max.sm,clocks.mem,power.limit,temperature.gpu"
    try:
        smi = subprocess.run(["nvidia-smi", f"--query-gpu={query}", "--format=csv"], capture_output=True, text=True,
                             timeout=20)
        lines += [f"nvidia-smi: {line}" for line in smi.stdout.strip().splitlines()]
    except (OSError, subprocess.SubprocessError) as error:
        lines.append(f"nvidia-smi: not available ({type(error).__name__})")
    return lines


class Study:
    """The steps' clock, results and summary.txt (rewritten after every step, so a killed run leaves one)."""

    def __init__(self, out: Path, budget: float | None, rehearsal: bool, steps: tuple[str, ...] = tuple(STEPS)):
        self.out, self.budget, self.rehearsal, self.steps = out, budget, rehearsal, steps
        # a selection of steps shares the budget among its own (the rest of the plan's shares unspent)
        shares = [STEPS[step][0] for step in steps if STEPS[step][0] is not None]
        self.scale = 1.0 if set(steps) == set(STEPS) or "rest" in steps else 1.0 / sum(shares)
        self.end = None if budget is None else START + budget - RESERVE_S
        self.header: list[str] = []
        self.ran: list[str] = []
        self.skipped: list[str] = []
        self.problems: list[str] = []

    def elapsed(self) -> float:
        return time.perf_counter() - START

    def cap(self, step: str) -> float | None:
        """Seconds this step may take from now: its share of the budget, within what is left."""
        share = STEPS[step][0]
        if self.end is None:
            return CHECK_CAP_S if step == "check" else None
        left = max(0.0, self.end - time.perf_counter())
        cap = left if share is None else min(left, share * self.scale * self.budget)
        return min(cap, CHECK_CAP_S) if step == "check" else cap

    def plan(self) -> list[str]:
        budget = "no budget (the whole plan)" if self.budget is None else f"budget {self.budget:.0f} s"
        lines = [f"plan ({budget}; expected seconds on an H100/H200, from experiments/gpu_study.py's docstring):"]
        for step, (share, what, expected) in STEPS.items():
            cap = ("rest of the budget" if share is None else f"cap {share * self.scale * self.budget:.0f} s") \
                if self.budget is not None else "no cap"
            if step == "check":
                cap = f"cap {min(CHECK_CAP_S, share * self.scale * self.budget if self.budget else CHECK_CAP_S):.0f} s"
            if step not in self.steps:
                cap = "not selected"
            lines.append(f"  {step:13} {cap:20} expected {'-' if expected is None else f'~{expected} s':7} {what}")
        return lines

    def write(self) -> None:
        kind = ("REHEARSAL on the CPU (smoke: tiny shapes, Triton interpreter, compile backend aot_eager; rows "
                "say run_kind=cpu-smoke): no number here is a GPU measurement") if self.rehearsal else "GPU study"
        lines = [f"gpu_study: {kind}", f"command: {' '.join(sys.argv)}", *self.header, *self.plan(), "", "ran:",
                 *self.ran, "", "skipped (cap reached):", *(self.skipped or ["  nothing"])]
        if self.problems:
            lines += ["", "failures:", *self.problems]
        lines.append(f"\ntotal wall time {self.elapsed():.0f} s" + (f" of a {self.budget:.0f} s budget"
                                                                    if self.budget is not None else ""))
        (self.out / "summary.txt").write_text("\n".join(lines) + "\n")


def _compile_mode(step: str, cap: float | None) -> str:
    choices = COMPILE_MODES[step]
    return next((compile_mode for compile_mode, needs in choices if cap is None or cap >= needs), choices[-1][0])


def _listed(step: str, items: list[str], limit: int = 20) -> list[str]:
    more = f"\n    ... and {len(items) - limit} more" if len(items) > limit else ""
    return [f"  {step}: {len(items)} timings skipped:"] + [f"    {item}" for item in items[:limit]] + \
        ([more.strip("\n")] if more else [])


# ------------------------------------------------------------------ steps with tables of their own
TORCHVISION_PROVIDERS = ("use_kernels", "eager", "compiled")  # use_kernels first: the point of the step
TORCHVISION_COLUMNS = ["model", "provider", "phase", "batch", "dtype", "layout", "ms_p20", "ms_p50", "ms_p80",
                       "images_per_s", "peak_memory_mb", "kernel_calls", "fell_through", "device", "torch", "triton",
                       "run_kind", "compile_mode", "timestamp"]
TWO_GPU_COLUMNS = ["scheme", "batch", "dtype", "layout", "ranks", "ms_per_step", "images_per_s", "peak_memory_mb",
                   "mb_sent_per_rank", "device", "torch", "triton", "run_kind", "timestamp"]
TWO_GPU_STEPS = {"gpu": (3, 20), "smoke": (1, 1)}  # (warm-up steps, timed steps) per rank and scheme
TWO_GPU_START_S = 20.0  # about what 2 new processes take to import torch and Triton and join: a smaller cap skips


def _rows_writer(path: Path, columns: list[str]) -> Callable[[dict], None]:
    """A new CSV at ``path`` (its header written now: the file exists whatever the step measures); the returned
    function appends a row and flushes."""
    import csv

    with open(path, "w", newline="") as f:
        csv.DictWriter(f, columns).writeheader()

    def write(row: dict) -> None:
        with open(path, "a", newline="") as f:
            csv.DictWriter(f, columns).writerow({k: f"{v:.6g}" if isinstance(v, float) else v for k, v in row.items()})
    return write


def _torchvision_model(smoke: bool):
    """(model, label): torchvision's own AlexNet where torchvision imports (not in the smoke test, which cannot
    run a full-size net), else this project's plain-torch copy of its module tree, the label saying which."""
    from alexnet_triton.model import AlexNet
    from alexnet_triton.study.registries.benchmark_cases import SMOKE_MODEL

    why = "the smoke test's scaled-down copy"
    if not smoke:
        try:
            import torchvision
        except Exception as error:  # noqa: BLE001  (a wheel built for another torch fails in other ways too)
            why = f"torchvision not importable: {type(error).__name__}"
        else:
            return torchvision.models.alexnet(), "torchvision.models.alexnet()"
    scale = SMOKE_MODEL["torchvision"] if smoke else {}
    return (AlexNet("torchvision", backend="torch", init="torch", **scale),
            f'AlexNet("torchvision", backend="torch") ({why}; torchvision\'s modules and names)')


def _torchvision_call(provider: str, phase: str, batch: int, dtype: str, layout: str, compile_mode: str,
                      smoke: bool) -> tuple[Callable[[], object], str]:
    """(what ``torchvision_step`` times for the provider and phase, the model's label): inference, or a training
    step (forward, F.cross_entropy, backward, torch.optim.SGD(fused=True)) of a fresh model on seeded inputs."""
    import torch
    import torch.nn.functional as F

    from alexnet_triton.architecture import INPUT_SIZES, SGD
    from alexnet_triton.precision import forward_context
    from alexnet_triton.study.benchmarks import benchmark
    from alexnet_triton.study.registries.benchmark_cases import DTYPES, LAYOUTS
    from alexnet_triton.study.registries.providers import compiled
    from alexnet_triton.study.vocabulary import INFERENCE, TRAIN_STEP

    dev = benchmark.device()
    torch.manual_seed(0)
    model, label = _torchvision_model(smoke)
    model = model.to(dev, memory_format=LAYOUTS[layout]).train(phase == TRAIN_STEP)
    gen = torch.Generator(dev).manual_seed(0)
    size = getattr(model, "input_size", INPUT_SIZES["torchvision"])  # torchvision's model does not say
    images = torch.randn(batch, 3, size, size, generator=gen, device=dev).contiguous(memory_format=LAYOUTS[layout])
    labels = torch.randint(model.classifier[-1].out_features, (batch,), generator=gen, device=dev)
    sgd = torch.optim.SGD(model.parameters(), **SGD, fused=True)

    def loss(x, t):
        with forward_context(dev.type, DTYPES[dtype].dtype):
            return F.cross_entropy(model(x).float(), t)

    loss_fn = compiled(loss, compile_mode) if provider == "compiled" else loss

    def step():
        if phase == INFERENCE:
            with torch.no_grad():
                return loss_fn(images, labels)
        sgd.zero_grad(set_to_none=True)
        loss_fn(images, labels).backward()
        sgd.step()
    return step, label


def torchvision_step(study: Study, cap: float | None) -> None:
    """torchvision's AlexNet, unmodified, under ``alexnet_triton.use_kernels()`` beside PyTorch eager and
    torch.compile (``_torchvision_call``), at the headline batch, dtype and layout, into torchvision.csv. The
    use_kernels rows are timed with the overrides active (their peak memory is the kernels'), and say how many
    calls the kernels ran and which fell through to PyTorch."""
    import contextlib

    import torch

    from alexnet_triton import dispatch
    from alexnet_triton.study.benchmarks import benchmark
    from alexnet_triton.study.registries.benchmark_cases import HEADLINE, MODEL_PHASES, SMOKE_BATCH, smoke

    is_smoke = smoke()
    batch, dtype = (SMOKE_BATCH, "fp32-ieee") if is_smoke else (HEADLINE["batch"], HEADLINE["dtype"])
    layout = HEADLINE["layout"]
    write = _rows_writer(study.out / "torchvision.csv", TORCHVISION_COLUMNS)
    end = None if cap is None else time.perf_counter() + cap
    compile_mode = _compile_mode("torchvision", cap)
    env, skipped, label = benchmark.conditions(), [], ""
    for provider in TORCHVISION_PROVIDERS:
        for phase in MODEL_PHASES:
            if end is not None and time.perf_counter() >= end:
                skipped.append(f"torchvision {provider} {phase}")
                continue
            dispatch.HANDLED.clear()
            dispatch.FALLBACKS.clear()
            # the Triton kernels (compiled with Triton's ptxas, as the study's Triton rows are), or PyTorch's
            kernels = (benchmark.triton_ptxas(), dispatch.use_kernels()) if provider == "use_kernels" else ()
            try:
                step, label = _torchvision_call(provider, phase, batch, dtype, layout, compile_mode, is_smoke)
                with benchmark.numeric_settings(dtype), contextlib.ExitStack() as active:
                    for context in kernels:
                        active.enter_context(context)
                    timing = benchmark.measure(step, "model")
            except Exception as error:  # noqa: BLE001  (one failing measurement must not end the study)
                study.problems.append(f"  torchvision {provider} {phase}: {type(error).__name__}: {error}")
                continue
            finally:
                torch._dynamo.reset()
            write(dict(model=label, provider=provider, phase=phase, batch=batch, dtype=dtype, layout=layout,
                       ms_p20=timing.p20, ms_p50=timing.p50, ms_p80=timing.p80,
                       images_per_s=batch / timing.p50 * 1e3, peak_memory_mb=timing.peak_memory_mb or "",
                       kernel_calls=sum(dispatch.HANDLED.values()) if provider == "use_kernels" else "",
                       fell_through="; ".join(f"aten::{op} ({why}) x{n}" for (op, why), n in
                                              dispatch.FALLBACKS.items()),
                       device=env.device, torch=env.torch, triton=env.triton, run_kind=env.run_kind,
                       compile_mode=("aot_eager" if is_smoke else compile_mode) if provider == "compiled" else "",
                       timestamp=datetime.now(timezone.utc).isoformat(timespec="seconds")))
    timings = len(MODEL_PHASES) * len(TORCHVISION_PROVIDERS)
    study.ran.append(f"  torchvision: {timings - len(skipped)} of {timings} timings, {label or 'no model built'}")
    if skipped:
        study.skipped += _listed("torchvision", skipped)


def _two_gpus_rank(rank: int, port: int, directory: Path, end: float) -> None:
    """One rank of ``two_gpus_step`` (GPU ``rank``, NCCL; smoke: the CPU, gloo): each scheme's training step on
    the 2012 net from the same weights, timed until ``end`` (wall clock); its rows to directory/rank<r>.pt."""
    import torch
    import torch.distributed as dist

    from alexnet_triton import ops, optim
    from alexnet_triton.architecture import INPUT_SIZES, NUM_CLASSES, SGD
    from alexnet_triton.model import AlexNet
    from alexnet_triton.model_parallel import RANKS, SCHEMES, Collectives, ModelParallelAlexNet
    from alexnet_triton.precision import forward_context
    from alexnet_triton.study.benchmarks import benchmark
    from alexnet_triton.study.registries.benchmark_cases import (
        DTYPES,
        HEADLINE,
        LAYOUTS,
        SMOKE_BATCH,
        SMOKE_MODEL,
        smoke,
    )

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    is_smoke = smoke()
    dev = torch.device("cpu") if is_smoke else torch.device("cuda", rank)
    if not is_smoke:
        torch.cuda.set_device(dev)
    dist.init_process_group("gloo" if is_smoke else "nccl", rank=rank, world_size=RANKS)
    batch, dtype = (SMOKE_BATCH, "fp32-ieee") if is_smoke else (HEADLINE["batch"], HEADLINE["dtype"])
    options = SMOKE_MODEL["2012"] if is_smoke else {}
    warmup, timed = TWO_GPU_STEPS["smoke" if is_smoke else "gpu"]
    torch.manual_seed(0)  # the same weights and images on both ranks
    with dev:
        state = AlexNet("2012", init="kaiming", **options).state_dict()
        size = options.get("input_size") or INPUT_SIZES["2012"]
        images = torch.randn(batch, 3, size, size).contiguous(memory_format=LAYOUTS[HEADLINE["layout"]])
        labels = torch.randint(options.get("num_classes", NUM_CLASSES), (batch,))
    rows = []
    for scheme in (*SCHEMES, "ddp"):
        go = [time.time() < end]
        dist.broadcast_object_list(go, src=0)  # rank 0's clock decides for both
        if not go[0]:
            continue
        comm = Collectives()
        with dev:
            if scheme == "ddp":
                model = AlexNet("2012", **options)
                model.load_state_dict(state)
            else:
                model = ModelParallelAlexNet(comm, scheme=scheme, **options)
                model.load_full_state_dict(state)
        net, x, y = model.to(memory_format=LAYOUTS[HEADLINE["layout"]]), images, labels
        if scheme == "ddp":  # each rank half the batch, DDP's gradient all-reduce counted by its hook
            net = torch.nn.parallel.DistributedDataParallel(model, device_ids=None if is_smoke else [rank])
            net.register_comm_hook(None, comm.ddp_hook({p: "gradients" for p in model.parameters()}))
            x, y = images.chunk(RANKS)[rank], labels.chunk(RANKS)[rank]
        sgd = optim.SGD(net.parameters(), **SGD)

        def step(net=net, sgd=sgd, x=x, y=y):
            sgd.zero_grad(set_to_none=True)
            with forward_context(dev.type, DTYPES[dtype].dtype):
                logits = net(x)
            ops.cross_entropy(logits, y).backward()
            sgd.step()

        with benchmark.numeric_settings(dtype), benchmark.triton_ptxas():
            for _ in range(warmup):
                step()
            del comm.transfers[:]
            if not is_smoke:
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
            dist.barrier()
            started = time.perf_counter()
            for _ in range(timed):
                step()
            if not is_smoke:
                torch.cuda.synchronize()
            seconds = (time.perf_counter() - started) / timed
        rows.append(dict(scheme=scheme, batch=batch, dtype=dtype, ms=seconds * 1e3,
                         peak_memory_mb=None if is_smoke else torch.cuda.max_memory_allocated() / 2**20,
                         sent=sum(t.sent for t in comm.transfers) / timed))
        dist.barrier()
    torch.save(rows, directory / f"rank{rank}.pt")
    dist.destroy_process_group()


def two_gpus_step(study: Study, cap: float | None) -> None:
    """The paper's split, the 2014 hybrid and DDP, each a training step of the full-size 2012 net at the headline
    batch and dtype on 2 GPUs (one spawned rank each, NCCL), into two_gpus.csv: the slower rank's time per step,
    peak memory, MB each rank sent. With fewer than 2 GPUs it says so and measures nothing; the rehearsal runs it
    on 2 gloo processes on the CPU at the smoke size."""
    import socket
    import tempfile

    import torch
    import torch.multiprocessing as mp

    from alexnet_triton.model_parallel import RANKS, SCHEMES
    from alexnet_triton.study.benchmarks import benchmark
    from alexnet_triton.study.registries.benchmark_cases import HEADLINE, smoke

    write = _rows_writer(study.out / "two_gpus.csv", TWO_GPU_COLUMNS)
    gpus = torch.cuda.device_count()
    if not smoke() and gpus < RANKS:
        study.ran.append(f"  two-gpus: skipped: {gpus} CUDA GPU visible; the split puts one rank on each of "
                         f"{RANKS} GPUs (so does its DDP comparison): on a machine with 2, this step measures them")
        return
    if cap is not None and cap < TWO_GPU_START_S:
        study.skipped.append(f"  two-gpus: its cap {cap:.0f} s is under the ~{TWO_GPU_START_S:.0f} s its 2 processes "
                             "take to start")
        return
    started, env = time.perf_counter(), benchmark.conditions()
    with socket.socket() as probe, tempfile.TemporaryDirectory() as directory:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
        probe.close()
        end = time.time() + (cap if cap is not None else 1e9)
        try:
            mp.spawn(_two_gpus_rank, args=(port, Path(directory), end), nprocs=RANKS)
        except Exception as error:  # noqa: BLE001  (one failing measurement must not end the study)
            study.problems.append(f"  two-gpus: {type(error).__name__}: {error}")
            return
        ranks = [torch.load(Path(directory) / f"rank{rank}.pt") for rank in range(RANKS)]
    device = env.device if smoke() else f"{RANKS} x {env.device}"
    for rows in zip(*ranks, strict=True):
        ms = max(row["ms"] for row in rows)
        peaks = [row["peak_memory_mb"] for row in rows if row["peak_memory_mb"] is not None]
        write(dict(scheme=rows[0]["scheme"], batch=rows[0]["batch"], dtype=rows[0]["dtype"],
                   layout=HEADLINE["layout"], ranks=RANKS, ms_per_step=ms, images_per_s=rows[0]["batch"] / ms * 1e3,
                   peak_memory_mb=max(peaks) if peaks else "",
                   mb_sent_per_rank=sum(row["sent"] for row in rows) / RANKS / 1e6, device=device, torch=env.torch,
                   triton=env.triton, run_kind=env.run_kind,
                   timestamp=datetime.now(timezone.utc).isoformat(timespec="seconds")))
    measured = [rows[0]["scheme"] for rows in zip(*ranks, strict=True)]
    study.ran.append(f"  two-gpus: {', '.join(measured) or 'nothing'} in {time.perf_counter() - started:.0f} s")
    if len(measured) < len(SCHEMES) + 1:
        study.skipped.append(f"  two-gpus: {len(SCHEMES) + 1 - len(measured)} of the {len(SCHEMES) + 1} schemes")


EXTRA_STEPS = {"torchvision": torchvision_step, "two-gpus": two_gpus_step}  # after "network", in this order


def run_study(study: Study) -> int:
    from alexnet_triton.study.benchmarks import benchmark, gpu_check
    from alexnet_triton.study.registries import benchmark_cases

    study.header = _device_lines()
    print("\n".join(study.header + study.plan()), flush=True)
    study.write()

    status = lambda kernel: ""  # noqa: E731  (the correctness check's, when it runs)
    if "check" in study.steps:
        cap = study.cap("check")
        started = time.perf_counter()
        print(f"== check (cap {cap:.0f} s)", flush=True)
        check = gpu_check.run_check(cap, study.out / "correctness.csv")
        study.ran += [f"  check: {time.perf_counter() - started:.0f} s"] + check.summary()
        study.skipped += [f"  check: {n} {tier} cases" for tier, n in check.skipped.items() if n]
        study.problems += [line for line in check.summary() if "FAILED" in line or "ERROR" in line]
        status = check.status
        study.write()

    steps = benchmark_cases.study_steps()
    for step in [name for name in STEPS if name in study.steps and name != "check"]:
        cap = study.cap(step)
        if step in EXTRA_STEPS:
            print(f"== {step}" + ("" if cap is None else f", cap {cap:.0f} s"), flush=True)
            EXTRA_STEPS[step](study, cap)
            study.write()
            continue
        if step not in steps:  # (conv-others: no provider outside the every-case set)
            continue
        cases, csv_name = steps[step], "model.csv" if step == "network" else "layers.csv"
        compile_mode = _compile_mode(step, cap) if step in COMPILE_MODES else None
        count = benchmark_cases.timings_in(cases)
        print(f"== {step}: {count} timings" + ("" if cap is None else f", cap {cap:.0f} s")
              + (f", compile mode {compile_mode}" if compile_mode else ""), flush=True)
        started = time.perf_counter()
        if step == "rest":  # the network's cases first, into model.csv
            network = [c for c in cases if isinstance(c, benchmark_cases.ModelCase)]
            parts = [(network, "model.csv"), ([c for c in cases if c not in network], "layers.csv")]
        else:
            parts = [(cases, csv_name)]
        outcome = benchmark.Unmeasured()
        for part, name in parts:
            result = benchmark.run(part, study.out / name, progress=False, append=True, compile_mode=compile_mode,
                                   deadline=None if cap is None else started + cap, correctness=status)
            outcome.failures += result.failures
            outcome.skipped += result.skipped
        study.ran.append(f"  {step}: {count - len(outcome.skipped) - len(outcome.failures)} of {count} timings "
                         f"in {time.perf_counter() - started:.0f} s"
                         + (f", compile mode {compile_mode}" if compile_mode else ""))
        if outcome.skipped:
            study.skipped += _listed(step, outcome.skipped)
        study.problems += [f"  {step}: {failure}" for failure in outcome.failures]
        study.write()
    print((study.out / "summary.txt").read_text(), flush=True)
    return 1 if study.problems else 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--budget", type=float, metavar="SECONDS", help="wall-time budget of the whole run")
    parser.add_argument("--out", type=Path, metavar="DIR", help="output folder (default: reports/benchmarks; "
                                                                "--rehearse: a new temporary folder)")
    parser.add_argument("--rehearse", action="store_true", help="the same plan on the CPU, smoke mode")
    parser.add_argument("--steps", nargs="+", choices=tuple(STEPS), default=tuple(STEPS), metavar="STEP",
                        help=f"only these steps, sharing the budget (default: all: {' '.join(STEPS)})")
    args = parser.parse_args(argv)
    if args.budget is not None and args.budget <= 0:
        parser.error("--budget must be positive")
    if args.rehearse:
        os.environ["ALEXNET_TRITON_MODE"] = "interpreter"  # read when the package is first imported
    import torch

    from alexnet_triton.kernels import runtime

    if args.rehearse and not runtime.INTERPRETER:
        parser.error("--rehearse: the package was already imported in GPU mode in this process")
    if not args.rehearse and (runtime.INTERPRETER or not torch.cuda.is_available()):
        print(f"error: gpu_study.py needs a CUDA GPU (execution mode here: {runtime.MODE}, CUDA available: "
              f"{torch.cuda.is_available()}); without one, rehearse the same plan on the CPU: "
              "python experiments/gpu_study.py --rehearse", file=sys.stderr)
        return 2
    out = args.out or (Path(tempfile.mkdtemp(prefix="gpu_study_rehearsal_")) if args.rehearse else OUT)
    out = out.resolve()
    if args.rehearse and (REPO / "reports").resolve() in (out, *out.parents):
        parser.error(f"--out {out}: rehearsal rows are not measurements and never go to reports/")
    out.mkdir(parents=True, exist_ok=True)
    stale = [out / name for name in FILES if (out / name).exists()]
    for path in stale:  # the study appends to its CSVs: start from empty ones
        path.unlink()
    budget = args.budget if args.budget is not None else (REHEARSAL_BUDGET_S if args.rehearse else None)
    if args.rehearse:  # one timed call per smoke timing (after the warm-up calls): more of the plan rehearsed
        from alexnet_triton.study.benchmarks import benchmark

        benchmark.SMOKE_REPEATS = 1
    print(f"gpu_study ({runtime.MODE} mode) -> {out}", flush=True)
    status = run_study(Study(out, budget, args.rehearse, tuple(args.steps)))
    if not args.rehearse and args.budget is None and out == OUT.resolve():
        report = subprocess.run([sys.executable, str(REPO / "experiments" / "make_report.py"), "--reuse",
                                 "inspection", "memory", "traffic", "training"], cwd=REPO)
        status = status or report.returncode
    print(f"gpu_study: {time.perf_counter() - START:.0f} s; files in {out}")
    return status


if __name__ == "__main__":
    raise SystemExit(main())
