"""How large are a ticket's outputs before training? Initial loss and logit scale of the tickets
a comparison trained, beside their re-initialized masks and their final accuracy.

A mask can select weights whose signs line up, so that the surviving pre-activations add up
instead of cancelling; the network then starts with huge logits and a huge loss, and a fixed
learning rate can fail to recover although the same mask trains normally from fresh weights.
This measures that, for every scorer that prunes at initialization: each ticket is found with
`pai.experiments.compare.find_ticket` exactly as `pai compare` finds it (same model seed, scoring subset
and seed, hence the same mask bit for bit), and for the original ticket and its `reinit`
sanity check we record, on the first `--images` test images, the mean cross-entropy and the
standard deviation of the logits of the masked network at its starting weights. The forward
pass is in train mode, as the first training step sees it (BatchNorm normalizes by the batch).
Where `--runs` names the comparison's runs.csv, each row also gets that run's final test
accuracy. Usage (the settings of results/compare-lenet300):

    python benchmarks/initial_scale.py --model lenet300 --dataset mnist \
        --compressions 2,4,8,16,32,64,100 --seeds 0,1,2 --train-per-class 500 \
        --runs results/compare-lenet300/runs.csv --out results/compare-lenet300/initial-scale
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

import pandas as pd
import torch
import torch.nn.functional as F

from pai.core.atomic import atomic_write_text
from pai.experiments.compare import find_ticket
from pai.data.loading import load_dataset, training_subset
from pai.models import build_model
from pai.report.provenance import current_command, write_provenance
from pai.pruning.registry import get_scorer
from pai.training.config import TrainConfig

VARIANTS = ("original", "reinit")


@torch.no_grad()
def initial_outputs(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    """Cross-entropy and logit standard deviation of `model` on (x, y), in train mode, without
    changing `model` (BatchNorm's running statistics are updated only on a copy)."""
    probe = copy.deepcopy(model).train()
    logits = probe(x).double()
    return {
        "initial_loss": F.cross_entropy(logits, y).item(),
        "initial_logit_std": logits.std().item(),
    }


def measure(args: argparse.Namespace) -> pd.DataFrame:
    data = load_dataset(args.dataset, root=args.data_root, device="cpu")
    if args.train_per_class is not None:
        data = training_subset(data, args.train_per_class)
    x, y = data.test.x[: args.images], data.test.y[: args.images]
    rows = []
    for seed in args.seeds:
        dense = build_model(args.model, args.dataset, seed=seed)
        rows.append(
            {"method": "dense", "variant": "original", "compression": 1.0, "seed": seed}
            | initial_outputs(dense, x, y)
        )
        for method in args.methods:
            for compression in args.compressions:
                for variant in VARIANTS:
                    ticket = find_ticket(
                        method,
                        args.model,
                        args.dataset,
                        compression,
                        data=data,
                        train=TrainConfig(),  # unused: these scorers do not train
                        seed=seed,
                        variant=variant,
                        per_class=args.per_class,
                        device="cpu",
                    )
                    model = build_model(args.model, args.dataset, seed=seed)
                    model.load_state_dict(ticket.state)
                    row = {
                        "method": method,
                        "variant": variant,
                        "compression": compression,
                        "seed": seed,
                    } | initial_outputs(model, x, y)
                    rows.append(row)
                    print(
                        f"{method} {variant} x{compression:g} seed {seed}: loss "
                        f"{row['initial_loss']:.3g}, logit sd {row['initial_logit_std']:.3g}",
                        file=sys.stderr,
                    )
    return pd.DataFrame(rows)


def with_final_accuracy(table: pd.DataFrame, runs_csv: Path) -> pd.DataFrame:
    """`table` with each run's final `test_accuracy` from a comparison's runs.csv."""
    runs = pd.read_csv(runs_csv)
    runs = runs.rename(columns={"requested_compression": "key"})[
        ["method", "variant", "key", "seed", "test_accuracy"]
    ]
    table = table.assign(key=table.compression.astype(float))
    return table.merge(runs, on=["method", "variant", "key", "seed"], how="left").drop(
        columns="key"
    )


def summary_markdown(table: pd.DataFrame) -> str:
    """Mean over seeds per method, compression and variant, as a markdown table."""
    columns = ["initial_loss", "initial_logit_std"]
    if "test_accuracy" in table:
        columns.append("test_accuracy")
    summary = (
        table.groupby(["method", "variant", "compression"], sort=False)[columns]
        .mean()
        .reset_index()
    )
    summary["compression"] = summary["compression"].map("{:g}".format)
    if "test_accuracy" in summary:
        summary["test_accuracy"] = 100 * summary["test_accuracy"]
        summary = summary.rename(columns={"test_accuracy": "final test acc. %"})
    # A run the comparison did not train (no such sanity check there) has no accuracy: blank.
    summary = summary.astype(object).where(summary.notna(), None)
    return summary.to_markdown(index=False, floatfmt=".3g", missingval="") + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--dataset", required=True)
    parser.add_argument(
        "--methods",
        type=lambda s: s.split(","),
        default=["random", "magnitude", "snip", "grasp", "synflow"],
    )
    parser.add_argument(
        "--compressions", type=lambda s: [float(c) for c in s.split(",")], required=True
    )
    parser.add_argument("--seeds", type=lambda s: [int(v) for v in s.split(",")], default=[0])
    parser.add_argument("--per-class", type=int, default=10, help="scoring examples per class")
    parser.add_argument("--train-per-class", type=int, default=None)
    parser.add_argument("--images", type=int, default=1000, help="test images measured on")
    parser.add_argument("--runs", type=Path, default=None, help="the comparison's runs.csv")
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    for method in args.methods:
        if getattr(get_scorer(method), "needs_training", False):
            parser.error(f"method {method!r} trains to find its mask; use scorers at init")

    start = time.perf_counter()
    table = measure(args)
    if args.runs is not None:
        table = with_final_accuracy(table, args.runs)
    wall = time.perf_counter() - start
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out / "initial_scale.csv", table.to_csv(index=False))
    atomic_write_text(args.out / "initial_scale.md", summary_markdown(table))
    write_provenance(
        args.out,
        current_command(),
        wall,
        device="cpu",
        notes=f"{len(args.seeds)} seeds, {args.images} test images, torch threads {args.threads}.",
    )
    print(summary_markdown(table))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
