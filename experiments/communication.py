"""Bytes each rank moves per training step: the paper's two-GPU split, the 2014 hybrid and data parallelism (DDP)
on 2 ranks.

Two gloo processes on this CPU build the full-size 2012 net each way and run one training step at --batch (the
global batch: the split's ranks both see all of it, DDP's half each, the hybrid's convolutions half each and its
fc layers all of it) with every Triton launch captured, not run (``runtime.capture_launches``: the shapes, and
so the bytes, are those of a real step; no kernel computes). The process group's calls are counted as they are
made (``model_parallel.Collectives``): the all-gathers, reduce-scatters, LRN halo exchanges and the hybrid's
conv gradient all-reduce, and DDP's gradient all-reduce through a counting communication hook. Writes to --out:
  communication.csv  one row per (scheme, rank, layer, collective, phase): bytes sent and received
  summary.csv        per scheme: bytes sent per rank per step, per image, ratio to DDP, the crossover batch
  step_model.csv     a MODEL of the step time on two H100 SXM: the roofline lower bound of the compute
                     (``study.models.roofline``, fp32-tf32) plus the bytes sent over a published link bandwidth
  communication.png  bytes by layer at --batch, and bytes against the batch with the crossover

    python experiments/communication.py [--batch 128] [--out reports/parallel]
"""

from __future__ import annotations

import argparse
import math
import os
import socket
import sys
import tempfile
from _checkout import REPO
from dataclasses import asdict
from pathlib import Path

import pandas as pd
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from alexnet_triton import ops
from alexnet_triton.architecture import INPUT_SIZES, NUM_CLASSES, parameter_shapes
from alexnet_triton.kernels import runtime
from alexnet_triton.model import AlexNet
from alexnet_triton.model_parallel import RANKS, SCHEMES, Collectives, ModelParallelAlexNet
from alexnet_triton.study.models.roofline import roofline_table

# Published per-direction bandwidth between two H100 SXM5 GPUs (bytes/s): NVLink 4, 18 links x 25 GB/s = 450 GB/s
# each way (NVIDIA H100 whitepaper: 900 GB/s total); PCIe Gen5 x16, 64 GB/s each way (PCI-SIG).
LINKS = {"nvlink4": 450e9, "pcie5x16": 64e9}
COMPUTE = ("h100-sxm", "fp32-tf32")  # the roofline's GPU and dtype of the modelled compute (fp32 tensors, as counted)
COLOURS = {"split": "tab:blue", "hybrid": "tab:green", "ddp": "tab:orange"}
LABELS = {"split": "split (activations: grow with the batch)", "hybrid": "hybrid (conv gradients + fc activations)",
          "ddp": "DDP (gradients: 61M parameters)"}


def counted_step(batch: int, **net) -> list[dict]:
    """This rank's counted calls of one captured training step of each scheme (the process group is up): rows
    of scheme and ``model_parallel.Transfer``'s fields. net: AlexNet's num_classes, width, input_size, dropout."""
    size = net.get("input_size") or INPUT_SIZES["2012"]
    images, labels = torch.zeros(batch, 3, size, size), torch.zeros(batch, dtype=torch.long)
    rows = []
    with runtime.capture_launches(lambda record: None):
        for scheme in SCHEMES:
            split = ModelParallelAlexNet(Collectives(), scheme=scheme, **net)
            ops.cross_entropy(split(images), labels).backward()  # (the hybrid's conv gradients summed in it)
            rows += [dict(scheme=scheme, **asdict(t)) for t in split.comm.transfers]
        model, counter = AlexNet("2012", init="torch", **net), Collectives()
        names = {p: name.split(".")[0] for p, (name, _) in
                 zip(model.parameters(), parameter_shapes("2012", net.get("width", 1.0),
                                                          net.get("num_classes", NUM_CLASSES), size), strict=True)}
        ddp = torch.nn.parallel.DistributedDataParallel(model)
        ddp.register_comm_hook(None, counter.ddp_hook(names))
        own = slice(counter.rank * batch // RANKS, (counter.rank + 1) * batch // RANKS)
        ops.cross_entropy(ddp(images[own]), labels[own]).backward()
        rows += [dict(scheme="ddp", **asdict(t)) for t in counter.transfers]
    return rows


def _step(rank: int, port: int, batch: int, directory: Path) -> None:
    """One spawned rank of ``count``: its ``counted_step`` at full size to directory/rank<r>.pt."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=RANKS)
    torch.save(counted_step(batch), directory / f"rank{rank}.pt")
    dist.destroy_process_group()


def count(batch: int) -> pd.DataFrame:
    """Every counted call of one step of each scheme on 2 spawned gloo ranks: scheme, rank, layer, collective,
    phase, sent, received (bytes), batch."""
    with socket.socket() as probe, tempfile.TemporaryDirectory() as directory:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
        probe.close()
        mp.spawn(_step, args=(port, batch, Path(directory)), nprocs=RANKS)
        rows = [row for rank in range(RANKS) for row in torch.load(Path(directory) / f"rank{rank}.pt")]
    table = pd.DataFrame(rows)
    table["batch"] = batch
    return table


def summarise(table: pd.DataFrame) -> pd.DataFrame:
    """Per scheme: bytes sent per rank per step (the ranks' mean; they are symmetric), per image of the global
    batch, the ratio to DDP, and where its bytes cross DDP's: gradient all-reduces (``fixed_per_rank``) do not
    grow with the batch, activations (``per_image``) do."""
    batch = int(table["batch"].iloc[0])
    sent = table.groupby(["scheme", "rank"])["sent"].sum().groupby("scheme").mean()
    fixed = table[table["collective"] == "all_reduce"].groupby(["scheme", "rank"])["sent"].sum() \
        .groupby("scheme").mean().reindex(sent.index, fill_value=0)
    summary = pd.DataFrame({"scheme": sent.index, "batch": batch, "sent_per_rank": sent.values,
                            "fixed_per_rank": fixed.values, "per_image": (sent - fixed).values / batch})
    summary["sent_per_image"] = summary["sent_per_rank"] / batch
    ddp = sent["ddp"]
    summary["ratio_to_ddp"] = summary["sent_per_rank"] / ddp
    summary["crossover_batch"] = [math.ceil((ddp - row.fixed_per_rank) / row.per_image) if row.per_image else None
                                  for row in summary.itertuples()]
    return summary


def step_model(summary: pd.DataFrame) -> pd.DataFrame:
    """A MODEL, not a measurement: per scheme and link, the step time on two H100 SXM = compute (the roofline
    lower bound of one GPU's share: DDP half the batch, the split and the hybrid half of every layer's work on the
    whole batch) + the
    bytes one rank sends / the link's published bandwidth, the two not overlapped (the split's exchanges sit on
    its critical path; DDP can hide its all-reduce behind the backward: ``overlapped_ms`` = max of the two)."""
    batch = int(summary["batch"].iloc[0])
    def step_ms(images: int) -> float:
        table = roofline_table(*COMPUTE, images)
        return float(table.loc[(table["variant"] == "2012") & (table["layer"] == "step"), "time_ms"].iloc[0])
    compute = {"ddp": step_ms(batch // RANKS), "split": step_ms(batch) / RANKS, "hybrid": step_ms(batch) / RANKS}
    rows = []
    for row in summary.itertuples():
        for link, bandwidth in LINKS.items():
            comm = row.sent_per_rank / bandwidth * 1e3
            rows.append(dict(scheme=row.scheme, link=link, batch=batch, compute_ms=compute[row.scheme],
                             comm_ms=comm, step_ms=compute[row.scheme] + comm,
                             overlapped_ms=max(compute[row.scheme], comm) if row.scheme == "ddp" else
                             compute[row.scheme] + comm))
    return pd.DataFrame(rows)


def plot(table: pd.DataFrame, summary: pd.DataFrame, path: Path) -> Path:
    """Left: MB one rank sends per step by layer at the counted batch; right: against the batch, with the
    crossover."""
    figure = Figure(figsize=(12, 4.8), layout="constrained")
    by_layer, against_batch = figure.subplots(1, 2)
    batch = int(table["batch"].iloc[0])
    sent = table[table["rank"] == 0].groupby(["scheme", "layer"], sort=False)["sent"].sum() / 1e6
    labels = [f"{scheme}: {layer}" for scheme, layer in sent.index]
    colours = [COLOURS[scheme] for scheme, _ in sent.index]
    by_layer.barh(labels, sent.values, color=colours)
    by_layer.invert_yaxis()
    by_layer.set_xscale("log")
    by_layer.set_xlabel(f"MB sent by one rank per step (batch {batch}, fp32, forward + backward)")
    by_layer.set_title("By layer: split (blue), hybrid (green), DDP's gradient all-reduce (orange)")
    per = summary.set_index("scheme")
    crossover = int(per.loc["split", "crossover_batch"])
    batches = [2 ** k for k in range(0, 1 + math.ceil(math.log2(max(crossover, batch) * 4)))]
    for scheme, label in LABELS.items():
        against_batch.plot(batches, [(per.loc[scheme, "fixed_per_rank"] + per.loc[scheme, "per_image"] * b) / 1e6
                                     for b in batches], "o-", color=COLOURS[scheme], label=label)
    against_batch.axvline(crossover, color="grey", linestyle=":", label=f"split = DDP: batch {crossover}")
    against_batch.axvline(batch, color="black", linewidth=0.8, label=f"batch {batch}")
    against_batch.set(xscale="log", yscale="log", xlabel="global batch", ylabel="MB sent by one rank per step",
                      title="Against the batch: the split grows with it, DDP does not")
    against_batch.legend()
    figure.suptitle("AlexNet 2012 on 2 ranks: bytes each rank sends per training step (counted, fp32)")
    FigureCanvasAgg(figure).print_png(path)
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=128, help="global batch (even: DDP gives half to each rank)")
    parser.add_argument("--out", type=Path, default=REPO / "reports" / "parallel")
    args = parser.parse_args(argv)
    if args.batch < RANKS or args.batch % RANKS:
        print(f"error: --batch {args.batch}: must be a positive multiple of {RANKS}", file=sys.stderr)
        raise SystemExit(2)
    args.out.mkdir(parents=True, exist_ok=True)
    table = count(args.batch)
    summary = summarise(table)
    model = step_model(summary)
    for name, frame in (("communication", table), ("summary", summary), ("step_model", model)):
        frame.to_csv(args.out / f"{name}.csv", index=False, float_format="%.6g")
        print(f"wrote {args.out / f'{name}.csv'}")
    print(f"wrote {plot(table, summary, args.out / 'communication.png')}")
    print(summary.to_string(index=False))
    print("A MODEL (roofline compute + bytes / published link bandwidth), not measured:")
    print(model.to_string(index=False))


if __name__ == "__main__":
    main()
