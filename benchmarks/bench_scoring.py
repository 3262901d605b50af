"""Scoring cost: 100-round SynFlow, and SNIP and GraSP on 100 CIFAR-10-shaped images, on VGG-16.

Each case times a whole `pai.prune` call (copy, every scoring round, every ranking) and one
scoring pass alone (`pai.compute_scores`), so the report separates the scorer's cost from the
driver's. The scoring images are seeded standard-normal tensors of CIFAR-10's shape (3x32x32,
labels cycling through the 10 classes): wall time does not depend on pixel values, and CIFAR-10
need not be present. Usage:

    python benchmarks/bench_scoring.py [--model vgg16] [--rounds 100] [--images 100] [--device cpu]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import pandas as pd
import torch

import pai
from pai.core.atomic import atomic_write_text
from pai.core.devices import resolve_device
from pai.report.provenance import current_command, provenance_markdown


def timed(run: Callable[[], object], device: torch.device) -> float:
    """Wall seconds of `run()`, waiting for the device to finish."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    run()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def cifar10_shaped_batch(images: int, seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """One batch of seeded N(0, 1) images of shape 3x32x32, labels cycling through 10 classes."""
    spec = pai.dataset_spec("cifar10")
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(images, *spec.input_shape, generator=generator)
    y = torch.arange(images) % spec.num_classes
    return [(x, y)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="vgg16")
    parser.add_argument("--compression", type=float, default=1000.0)
    parser.add_argument("--rounds", type=int, default=100, help="SynFlow rounds")
    parser.add_argument("--images", type=int, default=100, help="scoring images for SNIP, GraSP")
    parser.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    parser.add_argument("--out", default=str(Path(__file__).parents[1] / "results" / "perf"))
    args = parser.parse_args(argv)
    device = resolve_device(args.device)
    model = pai.build_model(args.model, "cifar10", seed=0)
    data = cifar10_shaped_batch(args.images)
    cases = [
        ("synflow", args.rounds, None),
        ("snip", 1, data),
        ("grasp", 1, data),
    ]
    rows = []
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    start = time.perf_counter()
    pai.compute_scores(model, "magnitude", device=device)  # warm-up: allocator, thread pools
    for scorer, rounds, batches in cases:
        one_pass = timed(
            partial(pai.compute_scores, model, scorer, data=batches, device=device), device
        )
        whole = timed(
            partial(
                pai.prune,
                model,
                scorer,
                args.compression,
                data=batches,
                rounds=rounds,
                device=device,
            ),
            device,
        )
        rows.append(
            {
                "scorer": scorer,
                "model": args.model,
                "inputs": "all-ones 1x3x32x32" if batches is None else f"{args.images}x3x32x32",
                "compression": args.compression,
                "rounds": rounds,
                "prune_s": round(whole, 2),
                "per_round_s": round(whole / rounds, 3),
                "one_scoring_pass_s": round(one_pass, 3),
            }
        )
        print(f"{scorer}: prune {whole:.2f} s over {rounds} round(s), one pass {one_pass:.2f} s")
    wall = time.perf_counter() - start
    table = pd.DataFrame(rows)
    print(table.to_string(index=False))
    out = Path(args.out)
    atomic_write_text(out / "scoring.csv", table.to_csv(index=False))
    atomic_write_text(
        out / "scoring.md",
        f"# Scoring cost: {args.model} with CIFAR-10 shapes ({device.type})\n\n"
        + table.to_markdown(index=False)
        + "\n\n`prune_s` is one whole `pai.prune` call (model copy, every scoring round and "
        "every keep-top-k ranking); `one_scoring_pass_s` is one `pai.compute_scores` call. "
        f"SNIP and GraSP score {args.images} seeded N(0, 1) images of CIFAR-10's shape "
        "(3x32x32, labels cycling through the 10 classes; CIFAR-10 itself is not read); SynFlow needs no data and "
        "scores an all-ones input in float64.\n\n"
        + provenance_markdown(
            current_command(),
            wall,
            device=device,
            notes=f"One-minute load average when the benchmark started: {load:.1f} "
            f"({os.cpu_count()} cores); other work on the machine slows every number.",
        ).replace("# Provenance", "## Provenance"),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
