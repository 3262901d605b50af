"""`pai collapse`: critical compression of pruning-at-initialization scorers (SynFlow Fig. 1).

For every seed the model is built once from the seed and every scorer prunes that same model;
scorers that need data all get the same seeded class-balanced batch. Writes into --out:
collapse.csv (one row per scorer and seed), collapse.md (mean and sd per scorer),
layer_density.png, alive_layers.png, PROVENANCE.md (this command, commit, machine, date, wall
time) and, with --compressions, fixed_compressions.csv.
"""

from __future__ import annotations

import argparse
import logging
import math
import time
from collections import Counter
from pathlib import Path

import pandas as pd
import torch
from torch import Tensor

from pai.core.atomic import atomic_write_text
from pai.cli.common import (
    add_data_root,
    add_device,
    add_model_and_dataset,
    add_scoring_arguments,
    comma_list,
    compression,
    compression_list,
    positive_int,
)
from pai.cli.prune import scoring_batches
from pai.pruning.collapse import (
    CRITERIA,
    CriticalCompression,
    critical_compression,
    effective_masks,
    layer_collapse,
)
from pai.report.collapse_plots import plot_alive_layers, plot_layer_density
from pai.data.specs import DATASETS, DatasetSpec, dataset_spec
from pai.core.devices import resolve_device
from pai.core.errors import PaiError
from pai.pruning.masks import Masks
from pai.models import build_model
from pai.report.provenance import write_provenance
from pai.pruning.driver import prune
from pai.pruning.registry import Scorer, get_scorer

log = logging.getLogger(__name__)

CSV_COLUMNS = (
    "scorer",
    "seed",
    "log10_critical_compression",
    "first_collapsed_layer",
    "log10_max_compression",
)
DEFAULT_SCORERS = "random,magnitude,snip,grasp,synflow"


def _resolution(text: str) -> float:
    """argparse type: a positive number of decades."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"resolution {text!r} must be a positive number")
    return value


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "collapse",
        help="critical compression (layer collapse) of scorers at initialization",
        description=(
            "For each scorer and seed, find the largest compression at which no prunable layer "
            "is empty (or, with --criterion path, input and output stay connected), beside the "
            "bound N/L. Every scorer prunes the same seeded model; scorers that need data share "
            "one seeded class-balanced batch per seed. Writes collapse.csv, collapse.md, "
            "layer_density.png and alive_layers.png into --out."
        ),
    )
    add_model_and_dataset(parser)
    parser.add_argument(
        "--scorers",
        type=comma_list(),
        default=comma_list()(DEFAULT_SCORERS),
        help=f"comma-separated scorer names (default {DEFAULT_SCORERS})",
    )
    parser.add_argument(
        "--seeds", type=positive_int, default=3, help="seeds 0..N-1 (model, data and scorer)"
    )
    parser.add_argument("--out", required=True, type=Path, help="folder for the table and figures")
    parser.add_argument(
        "--compressions",
        type=compression_list,
        default=[],
        help="also tabulate collapse and effective compression at these, e.g. 10,100,1000",
    )
    parser.add_argument(
        "--density-at",
        type=compression,
        default=100.0,
        help="compression of the per-layer density figure (default 100; first seed's masks)",
    )
    parser.add_argument(
        "--resolution",
        type=_resolution,
        default=0.05,
        help="search resolution in decades of compression for iterative scorers (default 0.05)",
    )
    parser.add_argument(
        "--criterion",
        choices=CRITERIA,
        default="layer",
        help="layer: no prunable layer empty (Tanaka et al.); path: input still reaches output",
    )
    parser.add_argument(
        "--search",
        choices=("scan", "bisection"),
        default=None,
        help="search for iterative scorers (default scan: no monotonicity assumed)",
    )
    parser.add_argument(
        "--batch-size", type=positive_int, default=256, help="scoring batch size (default 256)"
    )
    parser.add_argument(
        "--data-from",
        choices=list(DATASETS),
        default=None,
        help=(
            "take the scoring batch from this dataset (with at most as many classes) instead, "
            "e.g. when the model's dataset is absent: images are padded with black to the "
            "model's size and a single channel is repeated"
        ),
    )
    add_scoring_arguments(parser)
    add_data_root(parser)
    add_device(parser)
    parser.set_defaults(func=run)


def fit_to_input_shape(
    x: Tensor, source: DatasetSpec, shape: tuple[int, ...]
) -> tuple[Tensor, str]:
    """Images of `source` (normalized) made to fit `shape` = (C, H, W), and how it was done.

    Smaller images are centered on a black border (the normalized value of a black pixel,
    as LeCun et al. padded 28x28 MNIST to 32x32) and a single channel is repeated C times.
    """
    channels, height, width = shape
    n, c, h, w = x.shape
    if (c != channels and c != 1) or h > height or w > width:
        raise PaiError(
            f"images of {source.name} ({c}x{h}x{w}) cannot be fitted to the model's input "
            f"{channels}x{height}x{width}: only padding and repeating one channel are done"
        )
    steps = []
    if (h, w) != (height, width):
        black = torch.tensor(
            [-m / s for m, s in zip(source.mean, source.std, strict=True)], dtype=x.dtype
        ).to(x.device)
        canvas = black.reshape(1, c, 1, 1).expand(n, c, height, width).clone()
        top, left = (height - h) // 2, (width - w) // 2
        canvas[:, :, top : top + h, left : left + w] = x
        x = canvas
        steps.append(f"padded {h}x{w} to {height}x{width} with black")
    if c != channels:
        x = x.expand(n, channels, height, width).contiguous()
        steps.append(f"channel repeated {channels} times")
    return x, ", ".join(steps)


def _scoring_data(
    args: argparse.Namespace, spec: DatasetSpec, seed: int
) -> tuple[list[tuple[Tensor, Tensor]], str]:
    """The seeded class-balanced batches scorers see (on the CPU: prune moves them to its
    device), and a note saying where they come from."""
    source = dataset_spec(args.data_from or spec.name)
    batches = scoring_batches(source.name, args.per_class, args.batch_size, seed, args.data_root)
    note = f"{source.name} train, {args.per_class} per class"
    if source.name == spec.name:
        return batches, note
    if source.num_classes > spec.num_classes:
        raise PaiError(
            f"--data-from {source.name} has {source.num_classes} classes, more than the "
            f"{spec.num_classes} outputs of a model for {spec.name}"
        )
    fitted = []
    for x, y in batches:
        x, how = fit_to_input_shape(x, source, spec.input_shape)
        fitted.append((x, y))
    return fitted, f"{note}{', ' + how if how else ''} (no {spec.name} files here)"


def _layer_rows(masks: Masks) -> list[dict]:
    return [
        {"layer_index": index, "layer": name, "kept": int(m.sum()), "total": m.numel(),
         "density": int(m.sum()) / m.numel()}
        for index, (name, m) in enumerate(masks.items(), start=1)
    ]  # fmt: skip


def _alive_rows(result: CriticalCompression, extra: list[tuple[float, float]]) -> list[dict]:
    """Points of the layers-alive curve: exact steps, or the pruned masks (plus the dense net)."""
    if result.layer_limits is not None:
        # past each limit one more layer is empty; the last limit is N (one weight kept), the
        # end of the range, where one layer is still alive
        limits = sorted(result.layer_limits.values())
        layers = len(limits)
        points = [(0.0, 1.0)]
        points += [(math.log10(limit), 1 - (i + 1) / layers) for i, limit in enumerate(limits[:-1])]
        points.append((math.log10(limits[-1]), 1 / layers))
        return [{"log10_compression": x, "alive_fraction": f, "source": "exact"} for x, f in points]
    points = [(0.0, 1.0), *extra]
    return [{"log10_compression": x, "alive_fraction": f, "source": "pruned"} for x, f in points]


def _first_collapsed_label(result: CriticalCompression, layer_names: list[str]) -> str:
    """The first empty layer as "index: name", or why there is none."""
    first = result.first_collapsed_layer
    if first is not None:
        return f"{layer_names.index(first) + 1}: {first}"
    return "none up to rho_max" if result.collapsed_at is None else "none empty (disconnected)"


def _summary(results: pd.DataFrame) -> pd.DataFrame:
    """Per scorer: mean and sample sd of log10 critical compression, most common first layer."""
    rows = []
    for scorer, group in results.groupby("scorer", sort=False):
        layers = Counter(group["first_collapsed"])  # ties: the earliest seed's layer
        rows.append(
            {
                "scorer": scorer,
                "rounds": int(group["rounds"].iloc[0]),
                "method": group["method"].iloc[0],
                "seeds": len(group),
                "log10 rho_cr mean": group["log10_critical_compression"].mean(),
                "log10 rho_cr sd": group["log10_critical_compression"].std(ddof=1)
                if len(group) > 1
                else float("nan"),
                "first collapsed layer (most common)": layers.most_common(1)[0][0],
                "log10 rho_max": group["log10_max_compression"].iloc[0],
                "data": group["data"].iloc[0],
            }
        )
    return pd.DataFrame(rows)


def _markdown(args: argparse.Namespace, summary: pd.DataFrame, seeds: int) -> str:
    header = (
        f"# Critical compression: {args.model} for {args.dataset}\n\n"
        f"Scope {args.scope}, criterion {args.criterion}, seeds 0 to {seeds - 1} "
        f"(sd over seeds, sample sd), search resolution {args.resolution:g} decades for iterative "
        "scorers; one-shot scorers are exact. rho_max = N / L (prunable weights / prunable "
        "layers) is the largest compression at which every layer can keep a weight.\n\n"
    )
    table = summary.to_markdown(index=False, floatfmt=".3f")
    return header + table + "\n"


def _write_outputs(
    args: argparse.Namespace,
    results: list[dict],
    fixed: list[dict],
    densities: list[dict],
    alive: list[dict],
    seeds_done: int,
    max_compression: float,
) -> pd.DataFrame:
    out: Path = args.out
    table = pd.DataFrame(results)
    csv_columns = [*CSV_COLUMNS, *(c for c in table.columns if c not in CSV_COLUMNS)]
    atomic_write_text(out / "collapse.csv", table[csv_columns].to_csv(index=False))
    summary = _summary(table)
    atomic_write_text(out / "collapse.md", _markdown(args, summary, seeds_done))
    if fixed:
        atomic_write_text(out / "fixed_compressions.csv", pd.DataFrame(fixed).to_csv(index=False))
    name = f"{args.model} ({args.dataset})"
    if densities:
        plot_layer_density(
            pd.DataFrame(densities),
            args.density_at,
            f"{name}: per-layer density at compression {args.density_at:g} (seed 0)",
            out / "layer_density.png",
        )
    plot_alive_layers(
        pd.DataFrame(alive),
        max_compression,
        f"{name}: layers keeping a weight ({args.scope} pruning)",
        out / "alive_layers.png",
    )
    return summary


def run(args: argparse.Namespace) -> int:
    scorers: list[Scorer] = [get_scorer(name) for name in args.scorers]
    for scorer in scorers:
        if getattr(scorer, "needs_training", False):
            raise PaiError(f"scorer {scorer.name!r} finds its mask by training; pai collapse "
                           "compares scorers that prune at initialization")  # fmt: skip
    spec = dataset_spec(args.dataset)
    if args.data_from is not None and not any(s.needs_data for s in scorers):
        log.warning("--data-from is unused: none of %s needs data", ", ".join(args.scorers))
    started_all = time.perf_counter()
    device = resolve_device(args.device)
    args.out.mkdir(parents=True, exist_ok=True)
    pruned_at = sorted(set(args.compressions) | {args.density_at})
    results: list[dict] = []
    fixed: list[dict] = []
    densities: list[dict] = []
    alive: list[dict] = []
    max_compression = math.nan
    for seed in range(args.seeds):
        model = build_model(args.model, spec, seed=seed)
        data, data_note = None, "none (data-free)"
        if any(s.needs_data for s in scorers):
            data, data_note = _scoring_data(args, spec, seed)
        for scorer in scorers:
            started = time.perf_counter()
            common = {
                "data": data if scorer.needs_data else None,
                "rounds": args.rounds,
                "scope": args.scope,
                "seed": seed,
                "schedule": args.schedule,
                "device": device,
            }
            result = critical_compression(
                model, scorer, resolution=args.resolution, criterion=args.criterion,
                search=args.search, **common,
            )  # fmt: skip
            max_compression = result.max_compression
            layer_names = list(Masks.dense(model))
            extra: list[tuple[float, float]] = []
            if result.layer_limits is None:
                extra = [
                    (math.log10(p.compression), 1 - len(p.collapsed_layers) / len(layer_names))
                    for p in result.probes
                ]
            for target in pruned_at:
                if target not in args.compressions and seed != 0:
                    continue
                masks = prune(model, scorer, target, **common)
                collapsed = layer_collapse(masks)
                extra.append((math.log10(target), 1 - len(collapsed) / len(masks)))
                if target == args.density_at and seed == 0:
                    densities += [{"scorer": scorer.name, **row} for row in _layer_rows(masks)]
                if target in args.compressions:
                    effective = effective_masks(model, masks).compression
                    fixed.append(
                        {
                            "scorer": scorer.name, "seed": seed, "compression": target,
                            "log10_compression": math.log10(target),
                            "collapsed_layers": len(collapsed),
                            "first_collapsed_layer": collapsed[0] if collapsed else "",
                            "effective_compression": effective,
                            "log10_effective_compression": math.log10(effective),
                            "disconnected": math.isinf(effective),
                        }
                    )  # fmt: skip
            alive += [
                {"scorer": scorer.name, "seed": seed, **row} for row in _alive_rows(result, extra)
            ]
            first = result.first_collapsed_layer
            results.append(
                {
                    "scorer": scorer.name,
                    "seed": seed,
                    "log10_critical_compression": result.log10,
                    "first_collapsed_layer": first or "",
                    "log10_max_compression": math.log10(result.max_compression),
                    "first_collapsed": _first_collapsed_label(result, layer_names),
                    "critical_compression": float(result),
                    "max_compression": result.max_compression,
                    "collapsed_at": result.collapsed_at,
                    "method": result.method,
                    "criterion": result.criterion,
                    "scope": args.scope,
                    "rounds": args.rounds or scorer.default_rounds,
                    "prune_calls": result.prune_calls,
                    "data": data_note if scorer.needs_data else "none (data-free)",
                    "seconds": round(time.perf_counter() - started, 1),
                }
            )
            log.info("%s seed %d: %r", scorer.name, seed, result)
            _write_outputs(args, results, fixed, densities, alive, seed + 1, max_compression)
    summary = _write_outputs(args, results, fixed, densities, alive, args.seeds, max_compression)
    write_provenance(args.out, args.invocation, time.perf_counter() - started_all, device=device)
    print(summary.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print(f"wrote {args.out}/collapse.csv, collapse.md, layer_density.png, alive_layers.png, "
          "PROVENANCE.md"
          + (", fixed_compressions.csv" if fixed else ""))  # fmt: skip
    return 0
