"""Reproduce the lottery-ticket blog post's toy: a linear network that learns to add two numbers.

Setup (as in the post): 2 inputs, 200 hidden units, 1 output, linear, no biases. Local
(layerwise) magnitude pruning of 25% of the remaining weights per round until 2 weights per
layer remain, with late resetting to the weights after the first training iteration. Training
pairs are drawn uniformly from [-1, 1]^2 and test pairs from [1, 2]^2 (extrapolation); the
target is the sum, the loss the mean squared error, and we report the test RMSE.

The prune-reset loop is pai's own `imp_loop` with a regression trainer plugged in; the schedule
is `pruning_plan(..., scope="layerwise", rate=0.25, min_kept=2)`.

Our choices where the post gives none: Glorot-uniform initialization drawn from a seeded
generator, 1000 training and 1000 test pairs, full-batch Adam (lr 0.01) for 1000 steps per
round, float32. The random re-initialization control draws a fresh Glorot-uniform network from
another seed under the ticket's mask; the permuted control shuffles the ticket's mask within
each layer (`pai.pruning.sanity.shuffle_within_layers`) and starts from the late-reset weights.

Usage: python benchmarks/toy_sum.py [--seeds 0,1,2,3,4] [--out results/toy-sum]
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd
import torch
from torch import Tensor, nn

from pai.core.atomic import atomic_write_text
from pai.core.seeds import CONTROL_SEED_BASE
from pai.pruning.levels import pruning_plan
from pai.search.imp import imp_loop
from pai.pruning.masks import Masks
from pai.report.provenance import write_provenance
from pai.pruning.sanity import shuffle_within_layers

ROOT = Path(__file__).resolve().parents[1]

# The post's test RMSEs (and weights kept) for its one network.
POST = {
    "full model": (600, 7.8e-6),
    "winning ticket": (4, 6.9e-5),
    "random re-initialization": (4, None),
    "permuted mask": (4, 6.6),
}


@dataclass(frozen=True)
class ToySumConfig:
    """The toy experiment; defaults are what results/toy-sum reports."""

    hidden: int = 200
    train_pairs: int = 1000
    test_pairs: int = 1000
    steps: int = 1000
    lr: float = 0.01
    rate: float = 0.25
    min_kept: int = 2
    late_reset_step: int = 1
    max_rounds: int = 40  # enough rounds for the 400-weight layer to reach 2


@dataclass(frozen=True)
class SumData:
    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor


def make_data(config: ToySumConfig, seed: int) -> SumData:
    """Pairs uniform in [-1, 1]^2 to train on and in [1, 2]^2 to test on; targets their sums."""
    generator = torch.Generator().manual_seed(seed)
    x_train = torch.rand(config.train_pairs, 2, generator=generator) * 2 - 1
    x_test = torch.rand(config.test_pairs, 2, generator=generator) + 1
    return SumData(x_train, x_train.sum(1, keepdim=True), x_test, x_test.sum(1, keepdim=True))


def build_network(config: ToySumConfig, seed: int) -> nn.Sequential:
    """2 -> hidden -> 1, linear, no biases, Glorot-uniform weights from a seeded generator."""
    network = nn.Sequential(
        nn.Linear(2, config.hidden, bias=False), nn.Linear(config.hidden, 1, bias=False)
    )
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in network:
            nn.init.xavier_uniform_(layer.weight, generator=generator)
    return network


@torch.no_grad()
def rmse(network: nn.Module, x: Tensor, y: Tensor) -> float:
    return (network(x) - y).pow(2).mean().sqrt().item()


def train_masked(
    network: nn.Module,
    masks: Masks | None,
    data: SumData,
    config: ToySumConfig,
    snapshot_after: int | None = None,
) -> dict[str, Tensor] | None:
    """Full-batch Adam on the MSE; pruned weights get no gradient and stay exactly zero.

    Returns a copy of the weights after `snapshot_after` steps when asked (late resetting).
    """
    optimizer = torch.optim.Adam(network.parameters(), lr=config.lr)
    params = dict(network.named_parameters())
    snapshot = None
    for step in range(1, config.steps + 1):
        loss = (network(data.x_train) - data.y_train).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        if masks is not None:
            for name, mask in masks.items():
                params[name].grad.mul_(mask)
        optimizer.step()
        if masks is not None:
            masks.apply(network)
        if step == snapshot_after:
            snapshot = {k: v.detach().clone() for k, v in network.state_dict().items()}
    return snapshot


def surviving_weights(network: nn.Module, masks: Masks, start: dict[str, Tensor]) -> pd.DataFrame:
    """Each kept weight: layer, (row, column), value at the late reset and after training."""
    rows = []
    params = dict(network.named_parameters())
    for name, mask in masks.items():
        for row, column in mask.nonzero().tolist():
            rows.append(
                {
                    "layer": name,
                    "row": row,
                    "column": column,
                    "late_reset_value": start[name][row, column].item(),
                    "trained_value": params[name][row, column].item(),
                }
            )
    return pd.DataFrame(rows)


def run_seed(config: ToySumConfig, seed: int) -> tuple[list[dict], list[dict], pd.DataFrame]:
    """IMP on one seed: (the four variants' rows, one row per round, the ticket's weights)."""
    data = make_data(config, seed)
    network = build_network(config, seed)
    late_reset = train_masked(network, None, data, config, snapshot_after=config.late_reset_step)
    variants = [
        {
            "seed": seed,
            "variant": "full model",
            "weights": 600,
            "train_rmse": rmse(network, data.x_train, data.y_train),
            "test_rmse": rmse(network, data.x_test, data.y_test),
        }
    ]
    sizes = {name: p.numel() for name, p in network.named_parameters()}
    plan = pruning_plan(
        sizes,
        levels=config.max_rounds,
        rate=config.rate,
        scope="layerwise",
        min_kept=config.min_kept,
    )
    rounds = []

    def train_round(level: int, masks: Masks) -> None:
        train_masked(network, masks, data, config)
        rounds.append(
            {
                "seed": seed,
                "round": level,
                **{f"kept_{name}": count for name, count in masks.layer_kept().items()},
                "train_rmse": rmse(network, data.x_train, data.y_train),
                "test_rmse": rmse(network, data.x_test, data.y_test),
            }
        )

    masks = imp_loop(network, Masks.dense(network), plan, train_round, rewind_state=late_reset)
    weights = surviving_weights(network, masks, late_reset).assign(seed=seed)
    variants.append(
        {
            "seed": seed,
            "variant": "winning ticket",
            "weights": masks.kept,
            "train_rmse": rounds[-1]["train_rmse"],
            "test_rmse": rounds[-1]["test_rmse"],
        }
    )

    control_seed = CONTROL_SEED_BASE + seed
    reinit = build_network(config, control_seed)
    masks.apply(reinit)
    permuted_masks = shuffle_within_layers(masks, torch.Generator().manual_seed(control_seed))
    permuted = build_network(config, seed)
    permuted.load_state_dict(late_reset)
    permuted_masks.apply(permuted)
    for name, control, control_masks in (
        ("random re-initialization", reinit, masks),
        ("permuted mask", permuted, permuted_masks),
    ):
        train_masked(control, control_masks, data, config)
        variants.append(
            {
                "seed": seed,
                "variant": name,
                "weights": control_masks.kept,
                "train_rmse": rmse(control, data.x_train, data.y_train),
                "test_rmse": rmse(control, data.x_test, data.y_test),
            }
        )
    return variants, rounds, weights


def _format(value: float | None) -> str:
    return "—" if value is None or pd.isna(value) else f"{value:.2g}"


def readme(results: pd.DataFrame, weights: pd.DataFrame, rounds: int, config: ToySumConfig) -> str:
    first_seed = results.seed.min()
    seeds = sorted(results.seed.unique())
    lines = [
        "# Toy sum: a lottery ticket that adds two numbers",
        "",
        "The lottery-ticket blog post's toy experiment: a linear 2-200-1 network without biases "
        "learns y = x1 + x2 on pairs from [-1, 1]^2 and is tested on pairs from [1, 2]^2. IMP "
        "prunes 25% of each layer's remaining weights per round until 2 weights per layer "
        f"remain ({rounds} rounds), resetting survivors to their values after the first training "
        "iteration (late resetting). Test RMSE on the sum:",
        "",
        f"| variant | weights | ours, seed {first_seed} | ours, median of {len(seeds)} seeds "
        "[min, max] | the post |",
        "|---|---:|---:|---:|---:|",
    ]
    for variant, (post_weights, post_rmse) in POST.items():
        rows = results[results.variant == variant]
        ours = rows[rows.seed == first_seed].test_rmse.item()
        spread = (
            f"{_format(rows.test_rmse.median())} "
            f"[{_format(rows.test_rmse.min())}, {_format(rows.test_rmse.max())}]"
        )
        weights_kept = rows.weights.iloc[0]
        post = f"{_format(post_rmse)} ({post_weights} weights)" if post_rmse else "not reported"
        lines.append(f"| {variant} | {weights_kept} | {_format(ours)} | {spread} | {post} |")
    ticket = weights[weights.seed == first_seed]
    lines += [
        "",
        f"The winning ticket of seed {first_seed} (layer `0.weight` is hidden x input, `1.weight` "
        "is output x hidden):",
        "",
        "| layer | row | column | value at late reset | trained value |",
        "|---|---:|---:|---:|---:|",
    ]
    for row in ticket.itertuples():
        lines.append(
            f"| {row.layer} | {row.row} | {row.column} | {row.late_reset_value:.4f} | "
            f"{row.trained_value:.6f} |"
        )
    connected = _paths(weights)
    zero_rmse = (55 / 6) ** 0.5
    lines += [
        "",
        f"Tickets in which both inputs reach the output through a kept hidden unit: "
        f"{connected} of {len(seeds)} seeds.",
        "",
        "## Differences from the post",
        "",
        "- Full model and ticket RMSE: ours are lower (a few 1e-7, the float32 round-off of sums "
        f"between 2 and 4) because full-batch Adam for {config.steps} steps per round drives "
        "the training loss to float32 precision; the post does not state its optimizer or "
        "budget and stopped earlier (7.8e-6 and 6.9e-5). Both show the same thing: a 4-weight "
        "ticket extrapolates the sum to [1, 2]^2 as well as the 600-weight network.",
        "- Random re-initialization: the post gives no number. Ours trains as well as the "
        "ticket: in this linear problem a mask that connects each input to the output is the "
        "whole solution, and any non-zero start of those 4 weights reaches a path product of 1. "
        "The winning ticket's advantage here lies in its mask, not in its initial values.",
        f"- Permuted mask: ours gives about {zero_rmse:.2f}, the RMSE of predicting 0 on [1, 2]^2 "
        "(sqrt(E[(x1 + x2)^2]) = sqrt(55/6)): shuffling 2 + 2 weights within their layers almost "
        "never keeps a hidden unit with both an input and the output weight, so nothing reaches "
        "the output. The post's 6.6 is worse than predicting 0, so its permuted network must "
        "have kept some path that extrapolates wrongly; both show that the ticket's structure, "
        "not its size, solves the task.",
        "- Initialization, data size and optimizer are our choices (the post does not state "
        "them): Glorot-uniform weights, "
        f"{config.train_pairs} training and {config.test_pairs} test pairs, Adam at lr "
        f"{config.lr}. The initialization matters: in a trial with Kaiming-normal weights (std 1 "
        "in the first layer, seed 0) the input weights cut off from the output kept their large "
        "initial magnitudes, magnitude pruning kept them instead of the useful ones, and the "
        "4-weight ticket was disconnected (test RMSE 3.0).",
        "",
        "Files: results.csv (every variant and seed), rounds.csv (kept weights and RMSE after "
        "every round), ticket_weights.csv (the surviving weights), PROVENANCE.md.",
        "",
        "## Reproduce",
        "",
        "```",
        current_command(),
        "```",
        "",
        f"Configuration: {asdict(config)}.",
    ]
    return "\n".join(lines) + "\n"


def _paths(weights: pd.DataFrame) -> int:
    """How many seeds' tickets connect each input to the output through some hidden unit."""
    count = 0
    for _, ticket in weights.groupby("seed"):
        first = ticket[ticket.layer == "0.weight"]
        second = ticket[ticket.layer == "1.weight"]
        outputs = set(second.column)
        reached = {int(r.column) for r in first.itertuples() if r.row in outputs}
        count += reached == {0, 1}
    return count


def current_command() -> str:
    return shlex.join(["python", "benchmarks/toy_sum.py", *sys.argv[1:]])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2,3,4", help="comma-separated seeds")
    parser.add_argument(
        "--steps", type=int, default=ToySumConfig.steps, help="Adam steps per round"
    )
    parser.add_argument("--out", default=str(ROOT / "results" / "toy-sum"))
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    config = ToySumConfig(steps=args.steps)
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]

    start = time.perf_counter()
    variants, rounds, weights = [], [], []
    for seed in seeds:
        seed_variants, seed_rounds, seed_weights = run_seed(config, seed)
        variants += seed_variants
        rounds += seed_rounds
        weights.append(seed_weights)
        print(pd.DataFrame(seed_variants).to_string(index=False), file=sys.stderr)
    wall = time.perf_counter() - start

    results = pd.DataFrame(variants)
    results["post_test_rmse"] = results.variant.map(lambda v: POST[v][1])
    ticket_weights = pd.concat(weights, ignore_index=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "results.csv", results.to_csv(index=False))
    atomic_write_text(out / "rounds.csv", pd.DataFrame(rounds).to_csv(index=False))
    atomic_write_text(out / "ticket_weights.csv", ticket_weights.to_csv(index=False))
    atomic_write_text(
        out / "README.md", readme(results, ticket_weights, max(r["round"] for r in rounds), config)
    )
    write_provenance(
        out,
        current_command(),
        wall,
        device="cpu",
        notes=f"{len(seeds)} seeds, {config.steps} full-batch Adam steps per round, "
        f"torch threads {args.threads}.",
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
