"""Reproduce SynFlow's Fig. 1: the critical compression of VGG-16 at initialization, on CPU.

Runs `pai collapse` four times and writes a PROVENANCE.md beside each result:
- results/collapse-vgg16: vgg16 shaped for CIFAR-10 with all five scorers. SNIP and GraSP score
  real CIFAR-10 images when its files are found, else a Fashion-MNIST batch padded to 32x32
  with its channel repeated (the table's data column says which).
- results/collapse-vgg16/newer-scorers: the same model with NTK-SAP (data-free, 20 rounds),
  one seed. Not produced yet: on 2 CPU cores its scan down from rho_max had not ended after
  25 minutes (five probes or more), so it waits for a GPU or a longer run.
- results/collapse-vgg16-fashion-mnist: vgg16 shaped for Fashion-MNIST, every scorer on its data.
- results/collapse-vgg16-cifar100-data-free: the paper's own shape (CIFAR-100, 100 outputs) with
  the cheap data-free one-shot scorers (random, magnitude) over 10 seeds.

Usage: python benchmarks/collapse_vgg16.py [--data-root DIR] [--only NAME ...]
Budget: about 20 + 10 + 3 minutes on 2 idle CPU cores; SynFlow's 100-round prunes are most of
it (each about 100 s); the newer scorers' folder 10 minutes more where NTK-SAP reaches rho_max
at once (one 20-round NTK-SAP prune of VGG-16 takes about 5 minutes there), 5 more for every
search probe below it.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
from pathlib import Path

import torch

from pai.cli import main
from pai.data.loading import dataset_status
from pai.report.provenance import write_provenance

ROOT = Path(__file__).resolve().parents[1]
SCORERS = "random,magnitude,snip,grasp,synflow"
NEWER = "ntk-sap"  # the data-free scorer after SynFlow


def runs(data_root: str | None) -> dict[str, list[str]]:
    """The `pai collapse` arguments of each result folder."""
    root = [] if data_root is None else ["--data-root", data_root]
    cifar10_found = any(s.found for s in dataset_status(data_root) if s.spec.name == "cifar10")
    return {
        "collapse-vgg16": [
            "collapse", "--model", "vgg16", "--dataset", "cifar10", "--scorers", SCORERS,
            "--seeds", "3", "--compressions", "1000,10000", "--density-at", "1000",
            *([] if cifar10_found else ["--data-from", "fashion-mnist"]), *root,
            "--device", "cpu", "--out", "results/collapse-vgg16",
        ],
        "collapse-vgg16/newer-scorers": [
            "collapse", "--model", "vgg16", "--dataset", "cifar10", "--scorers", NEWER,
            "--seeds", "1", "--density-at", "1000", *root,
            "--device", "cpu", "--out", "results/collapse-vgg16/newer-scorers",
        ],
        "collapse-vgg16-fashion-mnist": [
            "collapse", "--model", "vgg16", "--dataset", "fashion-mnist", "--scorers", SCORERS,
            "--seeds", "3", "--density-at", "1000", *root, "--device", "cpu",
            "--out", "results/collapse-vgg16-fashion-mnist",
        ],
        "collapse-vgg16-cifar100-data-free": [
            "collapse", "--model", "vgg16", "--dataset", "cifar100", "--scorers",
            "random,magnitude", "--seeds", "10", "--density-at", "1000", "--device", "cpu",
            "--out", "results/collapse-vgg16-cifar100-data-free",
        ],
    }  # fmt: skip


def run(name: str, argv: list[str]) -> None:
    clock = time.perf_counter()
    code = main(argv)
    seconds = time.perf_counter() - clock
    if code != 0:
        sys.exit(code)
    write_provenance(
        ROOT / "results" / name,
        f"pai {shlex.join(argv)}",
        seconds,
        device="cpu",
        notes=f"Run from the repository root by `python benchmarks/collapse_vgg16.py`, "
        f"{torch.get_num_threads()} torch threads, niceness {os.nice(0)}.",
    )


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-root", default=None, help="where the datasets are")
    parser.add_argument("--only", nargs="*", default=None, help="result folders to produce")
    return parser.parse_args()


if __name__ == "__main__":
    args = parse_args()
    os.chdir(ROOT)
    for name, argv in runs(args.data_root).items():
        if args.only is None or name in args.only:
            run(name, argv)
