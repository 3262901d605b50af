"""Scoring cost on VGG-16 with CIFAR-10 shapes: pai.prune against a bare threshold, and the scorers.

Two parts, in one process. First, `pai.prune` with magnitude and random at compressions 10, 100
and 1000, and 100-round SynFlow per round, each against the outside reference written plainly
below: the same scores computed directly, then a bare global threshold (`torch.kthvalue` over
the concatenated scores, one comparison per layer: no exact count, no tie rule, no checks).
Second, as before, a whole `pai.prune` call and one scoring pass alone (`pai.compute_scores`)
for SynFlow, SNIP and GraSP, so the report separates the scorer's cost from the driver's. The
scoring images are seeded standard-normal tensors of CIFAR-10's shape (3x32x32, labels cycling
through the 10 classes): wall time does not depend on pixel values, and CIFAR-10 need not be
present. Usage:

    python benchmarks/bench_scoring.py [--model vgg16] [--rounds 100] [--images 100]
        [--repeats 3] [--synflow-repeats 1] [--device cpu]
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import pandas as pd
import torch
from torch import Tensor, nn
from torch.func import functional_call

import pai
from pai.core.atomic import atomic_write_text
from pai.core.devices import resolve_device
from pai.report.provenance import current_command, provenance_markdown

TARGET_RATIO = 1.5  # pai.prune may take at most this many times the bare reference


def timed(run: Callable[[], object], device: torch.device) -> float:
    """Wall seconds of `run()`, waiting for the device to finish."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    run()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def best_of(repeats: int, run: Callable[[], object], device: torch.device) -> float:
    """The fastest of `repeats` timed calls (the least disturbed by other work)."""
    return min(timed(run, device) for _ in range(repeats))


def cifar10_shaped_batch(images: int, seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """One batch of seeded N(0, 1) images of shape 3x32x32, labels cycling through 10 classes."""
    spec = pai.dataset_spec("cifar10")
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(images, *spec.input_shape, generator=generator)
    y = torch.arange(images) % spec.num_classes
    return [(x, y)]


# The outside reference, written plainly: no pai beyond the model it is given.


def plain_weights(model: nn.Module) -> list[Tensor]:
    """The weight of every Conv and Linear layer, in model order."""
    return [m.weight for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def bare_threshold(scores: list[Tensor], compression: float) -> list[Tensor]:
    """Keep the scores at or above the k-th largest, k = total / compression."""
    flat = torch.cat([score.reshape(-1) for score in scores])
    k = max(1, round(flat.numel() / compression))
    threshold = torch.kthvalue(flat, flat.numel() - k + 1).values
    return [score >= threshold for score in scores]


def bare_magnitude(model: nn.Module, compression: float) -> list[Tensor]:
    """|w| of every weight, thresholded."""
    return bare_threshold([w.detach().abs() for w in plain_weights(model)], compression)


def bare_random(model: nn.Module, compression: float, device: torch.device) -> list[Tensor]:
    """Seeded uniform float64 scores (what the random scorer draws), thresholded."""
    generator = torch.Generator().manual_seed(0)
    scores = [
        torch.rand(w.shape, generator=generator, dtype=torch.float64).to(device)
        for w in plain_weights(model)
    ]
    return bare_threshold(scores, compression)


def bare_synflow(model: nn.Module, input_shape: tuple[int, ...]) -> Callable[..., list[Tensor]]:
    """One SynFlow round (Tanaka et al. 2020) and the threshold, as a function of the masks.

    Prepared once, outside the timing: a float64 copy of the network in eval mode with biases
    and BatchNorm means zero and |w| for every weight. A round multiplies |w| by the masks,
    takes R = the summed output for an all-ones input and scores |w dR/dw|.
    """
    net = copy.deepcopy(model).double().eval()
    layers = [m for m in net.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    names = [f"{name}.weight" for name, m in net.named_modules() if m in layers]
    with torch.no_grad():
        for name, p in net.named_parameters():
            if name.endswith("bias"):
                p.zero_()
            else:
                p.abs_()
        for module in net.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.running_mean.zero_()
    state = {**dict(net.named_parameters()), **dict(net.named_buffers())}
    magnitudes = [state[name].detach() for name in names]
    device = magnitudes[0].device
    ones = torch.ones(1, *input_shape, dtype=torch.float64, device=device)

    def one_round(masks: list[Tensor], compression: float) -> list[Tensor]:
        weights = [(w * m).requires_grad_() for w, m in zip(magnitudes, masks, strict=True)]
        flow = functional_call(net, {**state, **dict(zip(names, weights, strict=True))}, ones)
        grads = torch.autograd.grad(flow.sum(), weights)
        scores = [(w * g).detach().abs() for w, g in zip(weights, grads, strict=True)]
        return bare_threshold(scores, compression)

    return one_round


def against_bare(
    model: nn.Module, args: argparse.Namespace, device: torch.device
) -> tuple[list[dict[str, object]], float]:
    """pai.prune against the bare reference: magnitude and random at 10, 100, 1000, and one
    SynFlow round (a 100-round prune divided by its rounds) against one bare SynFlow round.
    Returns the rows and the SynFlow prune's wall seconds."""
    rows = []

    def row(scorer: str, compression: float, rounds: int, bare: float, prune: float) -> None:
        ratio = prune / bare
        rows.append(
            {
                "scorer": scorer,
                "compression": compression,
                "rounds": rounds,
                "bare_s": round(bare, 3),
                "prune_s": round(prune, 3),
                "prune_per_bare": round(ratio, 2),
                "within_target": ratio <= TARGET_RATIO,
            }
        )
        print(
            f"{scorer} {compression:g}: bare {bare:.3f} s, pai.prune {prune:.3f} s ({ratio:.2f}x)"
        )

    for scorer, bare in (
        ("magnitude", partial(bare_magnitude, model)),
        ("random", partial(bare_random, model, device=device)),
    ):
        for compression in (10.0, 100.0, 1000.0):
            bare_s = best_of(args.repeats, partial(bare, compression), device)
            prune = partial(pai.prune, model, scorer, compression, device=device)
            row(scorer, compression, 1, bare_s, best_of(args.repeats, prune, device))
    dense = [torch.ones_like(w, dtype=torch.bool) for w in plain_weights(model)]
    one_round = partial(
        bare_synflow(model, pai.dataset_spec("cifar10").input_shape), dense, args.compression
    )
    bare_s = best_of(args.repeats, one_round, device)
    synflow = partial(
        pai.prune, model, "synflow", args.compression, rounds=args.rounds, device=device
    )
    whole = best_of(args.synflow_repeats, synflow, device)
    row("synflow (per round)", args.compression, args.rounds, bare_s, whole / args.rounds)
    return rows, whole


def scorer_costs(
    model: nn.Module, args: argparse.Namespace, device: torch.device, synflow_prune_s: float
) -> list[dict[str, object]]:
    """A whole pai.prune call and one scoring pass, for SynFlow (its prune timed already, by
    `against_bare`), SNIP and GraSP."""
    data = cifar10_shaped_batch(args.images)
    rows = []
    for scorer, rounds, batches in (
        ("synflow", args.rounds, None),
        ("snip", 1, data),
        ("grasp", 1, data),
    ):
        one_pass = timed(
            partial(pai.compute_scores, model, scorer, data=batches, device=device), device
        )
        prune = partial(
            pai.prune, model, scorer, args.compression, data=batches, rounds=rounds, device=device
        )
        whole = synflow_prune_s if scorer == "synflow" else timed(prune, device)
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
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="vgg16")
    parser.add_argument("--compression", type=float, default=1000.0, help="SynFlow, SNIP, GraSP")
    parser.add_argument("--rounds", type=int, default=100, help="SynFlow rounds")
    parser.add_argument("--images", type=int, default=100, help="scoring images for SNIP, GraSP")
    parser.add_argument("--repeats", type=int, default=3, help="best of this many timings")
    parser.add_argument(
        "--synflow-repeats", type=int, default=1, help="best of this many 100-round SynFlow prunes"
    )
    parser.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    parser.add_argument("--out", default=str(Path(__file__).parents[1] / "results" / "perf"))
    args = parser.parse_args(argv)
    device = resolve_device(args.device)
    model = pai.build_model(args.model, "cifar10", seed=0).to(device)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    start = time.perf_counter()
    pai.compute_scores(model, "magnitude", device=device)  # warm-up: allocator, thread pools
    rows, synflow_prune_s = against_bare(model, args, device)
    bare = pd.DataFrame(rows)
    costs = pd.DataFrame(scorer_costs(model, args, device, synflow_prune_s))
    wall = time.perf_counter() - start
    print(bare.to_string(index=False))
    print(costs.to_string(index=False))
    out = Path(args.out)
    atomic_write_text(out / "scoring-bare.csv", bare.to_csv(index=False))
    atomic_write_text(out / "scoring.csv", costs.to_csv(index=False))
    atomic_write_text(
        out / "scoring.md",
        f"# Scoring cost: {args.model} with CIFAR-10 shapes ({device.type})\n\n"
        "## pai.prune against a bare threshold\n\n"
        + bare.to_markdown(index=False)
        + "\n\n`bare_s` is the outside reference, written plainly in the benchmark: the same "
        "scores computed directly (|w|; seeded uniform float64 draws; one SynFlow pass on a "
        "float64 copy), then `torch.kthvalue` over the concatenated scores and one comparison "
        "per layer, with no exact count, no tie rule and no checks. `prune_s` is one whole "
        "`pai.prune` call (private model copy, scoring, score checks, exact keep-top-k with "
        "ties broken by position); for SynFlow it is a "
        f"{args.rounds}-round prune to {args.compression:g} divided by its rounds, against one "
        "bare round on dense masks. Best of "
        f"{args.repeats} timings each (the SynFlow prune: best of {args.synflow_repeats}), in "
        f"one process; the target is `prune_per_bare` <= {TARGET_RATIO}.\n\n"
        "## Scorers: a whole prune and one scoring pass\n\n"
        + costs.to_markdown(index=False)
        + "\n\n`prune_s` is one whole `pai.prune` call (model copy, every scoring round and "
        "every keep-top-k ranking); `one_scoring_pass_s` is one `pai.compute_scores` call. "
        f"SNIP and GraSP score {args.images} seeded N(0, 1) images of CIFAR-10's shape "
        "(3x32x32, labels cycling through the 10 classes; CIFAR-10 itself is not read); "
        "SynFlow needs no data and scores an all-ones input in float64.\n\n"
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
