"""Stacked training throughput: K runs in one loop against the same K runs one after the other.

For each configuration of a preset (model, dataset, batch size, steps per run) and each stack
size K, in this process: K runs trained one after the other by `pai.train`, then the same K
runs (same seeds, same initial weights) by `pai.train_many(..., stack_size=K)`. The report is
the aggregate rate, K * steps * batch / seconds, of each (the seconds of the whole calls, set-up
included, evaluations excluded: every run evaluates once, on 100 test examples), their ratio,
and the rate of the open_lth-style loop of `bench_train.py` (a torchvision dataset behind a
DataLoader, one run) as the outside baseline. With `--candidates`, the seconds per step of the
stacking candidate not taken, `torch.func.stack_module_state` + `vmap(functional_call)`,
against pai's stacked module, on the same weights and batches; with `--compile-candidate`, one
run's step eager against `torch.compile`. Every report has the arithmetic floor of nets of
Linear layers (`gemm_floor_seconds`). One report per configuration:
`results/perf/stack-<model>-<dataset>-<device>.md`. Usage:

    python benchmarks/bench_stack.py --data-root ../shared/data [--preset cpu] [--only lenet300]
    python benchmarks/bench_stack.py --data-root ../shared/data --preset gpu --device cuda --compile-candidate
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch
import torch.nn.functional as F
from bench_train import dataloader_loop, synchronize
from torch import Tensor
from torch.func import functional_call, stack_module_state, vmap

import pai
from pai.core.atomic import atomic_write_text
from pai.core.devices import resolve_device
from pai.data.loading import Dataset, Split, resolve_data_root
from pai.report.provenance import current_command, provenance_markdown
from pai.training.stacked import BATCHED_KERNELS, stack_modules

TEST_EXAMPLES = 100  # evaluation is excluded from the rates; a small split keeps it short


@dataclass(frozen=True)
class Setting:
    """One configuration: `steps` per run, each stack size in `stacks`."""

    model: str
    dataset: str
    batch_size: int
    steps: int
    stacks: tuple[int, ...]
    note: str = ""


CONV_NOTE = (
    "K = 64 is left out on a CPU: its two measurements would take longer than the rest of the "
    "benchmark together, and stacks of this net were already slower than one run after "
    "another at K = 4 and 16 (the arithmetic, which stacking does not reduce, bounds a CPU)."
)

PRESETS: dict[str, tuple[Setting, ...]] = {
    # sized for a 2-core CPU: a few minutes in all
    "cpu": (
        Setting("lenet300", "mnist", 60, 50, (1, 4, 8, 16, 64)),
        Setting("conv4", "fashion-mnist", 60, 4, (1, 4, 16), CONV_NOTE),
        Setting("resnet20", "fashion-mnist", 128, 4, (1, 4, 16), CONV_NOTE),
    ),
    # for one GPU: about 5 minutes in all
    "gpu": (
        Setting("lenet300", "mnist", 60, 500, (1, 4, 16, 64)),
        Setting("conv4", "fashion-mnist", 60, 200, (1, 4, 16, 64)),
        Setting("resnet20", "fashion-mnist", 128, 100, (1, 4, 16, 64)),
    ),
}


def small_test(data: Dataset) -> Dataset:
    test = data.test
    cut = Split(test.x[:TEST_EXAMPLES], test.y[:TEST_EXAMPLES], test.num_classes, test.pad_value)
    return Dataset(data.spec, data.root, data.train, cut)


def config_for(setting: Setting) -> pai.TrainConfig:
    return pai.TrainConfig(
        budget=f"{setting.steps}it",
        batch_size=setting.batch_size,
        lr=0.05,
        momentum=0.9,
        lr_schedule="constant",
        eval_every=f"{setting.steps}it",
    )


def one_after_another(setting: Setting, data: Dataset, runs: int, device) -> float:
    """Seconds of `runs` runs trained by `pai.train` one after the other, evaluations excluded."""
    config = config_for(setting)
    models = [pai.build_model(setting.model, setting.dataset, seed=s) for s in range(runs)]
    synchronize(device)
    start = time.perf_counter()
    evaluating = 0.0
    for seed, model in enumerate(models):
        result = pai.train(model, data, config.replace(seed=seed), device=device, progress=False)
        evaluating += result.metrics["eval_seconds"]
    synchronize(device)
    return time.perf_counter() - start - evaluating


def stacked(setting: Setting, data: Dataset, runs: int, device) -> float:
    """Seconds of the same runs trained by `pai.train_many` in one stack, evaluations excluded."""
    config = config_for(setting)
    models = [pai.build_model(setting.model, setting.dataset, seed=s) for s in range(runs)]
    synchronize(device)
    start = time.perf_counter()
    results = pai.train_many(
        models, data, config, seeds=list(range(runs)), device=device, stack_size=runs,
        progress=False,
    )  # fmt: skip
    synchronize(device)
    return time.perf_counter() - start - results[0].metrics["eval_seconds"]


def seconds_per_call(function: Callable[[], None], calls: int, device, warmup: int = 1) -> float:
    """Mean seconds of one call of `function` over `calls` calls, after `warmup` calls."""
    for _ in range(warmup):
        function()
    synchronize(device)
    start = time.perf_counter()
    for _ in range(calls):
        function()
    synchronize(device)
    return (time.perf_counter() - start) / calls


def candidate_step_seconds(setting: Setting, runs: int, device, steps: int) -> dict[str, float]:
    """Seconds per training step (forward, backward, SGD with momentum) of a stack of `runs`
    built both ways, on one random batch per run."""
    spec = pai.dataset_spec(setting.dataset)
    models = [
        pai.build_model(setting.model, setting.dataset, seed=s).to(device) for s in range(runs)
    ]
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(setting.batch_size, runs, *spec.input_shape, generator=generator).to(device)
    y = torch.randint(0, spec.num_classes, (runs, setting.batch_size), generator=generator)
    y = y.to(device)

    module = stack_modules(models)
    module_optimizer = torch.optim.SGD(module.parameters(), lr=0.01, momentum=0.9)

    def module_step() -> None:
        logits = module(x.flatten(1, 2))
        loss = F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="none").sum()
        module_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        module_optimizer.step()

    def with_kernels(batched: bool):
        def step() -> None:
            chosen = BATCHED_KERNELS.get(device.type)
            BATCHED_KERNELS[device.type] = batched
            try:
                module_step()
            finally:
                BATCHED_KERNELS[device.type] = chosen

        return step

    params, buffers = stack_module_state(models)
    base = copy.deepcopy(models[0]).to("meta")
    forward = vmap(lambda p, b, xs: functional_call(base, (p, b), (xs,)))
    vmap_optimizer = torch.optim.SGD(params.values(), lr=0.01, momentum=0.9)
    x_by_run = x.transpose(0, 1).contiguous()

    def vmap_step() -> None:
        logits = forward(params, buffers, x_by_run)
        loss = F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="none").sum()
        vmap_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        vmap_optimizer.step()

    steps_by_name = {
        "stacked_batched_kernels": with_kernels(True),
        "stacked_per_run_kernels": with_kernels(False),
        "vmap_functional_call": vmap_step,
    }
    return {name: seconds_per_call(step, steps, device) for name, step in steps_by_name.items()}


def gemm_floor_seconds(setting: Setting, runs: int, device, steps: int) -> dict[str, float] | None:
    """Seconds per run and step of the bare matrix products of one training step of `runs`
    runs, where every prunable layer is a Linear (else None): each layer's forward product,
    weight gradient and input gradient (none for the first layer, as autograd skips it) on
    preallocated tensors, by `torch.mm` run after run and by `torch.bmm` over the stack. No
    autograd, optimizer, masks, elementwise work or data: a bound no stacking can beat."""
    model = pai.build_model(setting.model, setting.dataset, seed=0)
    if any(not isinstance(m, torch.nn.Linear) for m in model.modules() if hasattr(m, "weight")):
        return None
    generator = torch.Generator().manual_seed(0)

    def draw(*shape: int) -> Tensor:
        return torch.randn(*shape, generator=generator).to(device)

    batch = setting.batch_size
    layers = [
        (draw(runs, m.out_features, m.in_features), draw(runs, batch, m.in_features),
         draw(runs, batch, m.out_features))
        for m in model.modules() if isinstance(m, torch.nn.Linear)
    ]  # fmt: skip

    def run_after_run() -> None:
        for run in range(runs):
            for index, (weight, x, grad) in enumerate(layers):
                torch.mm(x[run], weight[run].t())
                torch.mm(grad[run].t(), x[run])
                if index:
                    torch.mm(grad[run], weight[run])

    def over_the_stack() -> None:
        for index, (weight, x, grad) in enumerate(layers):
            torch.bmm(x, weight.transpose(1, 2))
            torch.bmm(grad.transpose(1, 2), x)
            if index:
                torch.bmm(grad, weight)

    return {
        "mm": seconds_per_call(run_after_run, steps, device) / runs,
        "bmm": seconds_per_call(over_the_stack, steps, device) / runs,
    }


def floor_row(setting: Setting, threads: int, runs: int, device, sequential_rate: float):
    """The floor's rates at `runs` and the ceiling they put on a stack's speedup, or None."""
    seconds = gemm_floor_seconds(setting, runs, device, max(20, setting.steps))
    if seconds is None:
        return None
    rates = {name: setting.batch_size / s for name, s in seconds.items()}
    return {
        "threads": threads,
        "K": runs,
        "products_mm_samples_per_s": round(rates["mm"], 1),
        "products_bmm_samples_per_s": round(rates["bmm"], 1),
        "one_after_another_samples_per_s": round(sequential_rate, 1),
        "speedup_ceiling": round(max(rates.values()) / sequential_rate, 2),
    }


def compiled_step_seconds(setting: Setting, device, steps: int) -> dict[str, float]:
    """Seconds per training step of one run, eager and under `torch.compile` (mode
    "reduce-overhead", CUDA graphs, on CUDA; the default mode elsewhere), the candidate for a
    `--compile` flag; and the seconds the first compiled step took."""
    spec = pai.dataset_spec(setting.dataset)
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(setting.batch_size, *spec.input_shape, generator=generator).to(device)
    y = torch.randint(0, spec.num_classes, (setting.batch_size,), generator=generator).to(device)
    model = pai.build_model(setting.model, setting.dataset, seed=0).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    mode = "reduce-overhead" if device.type == "cuda" else "default"
    compiled = torch.compile(model, mode=mode)

    def step(forward) -> None:
        loss = F.cross_entropy(forward(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    start = time.perf_counter()
    step(compiled)
    synchronize(device)
    seconds = {"first_compiled_step_s": time.perf_counter() - start}
    for name, forward in (("eager_step_s", model), ("compiled_step_s", compiled)):
        seconds[name] = seconds_per_call(lambda f=forward: step(f), steps, device, warmup=10)
    return seconds


def measure(setting: Setting, root: Path, device, args) -> dict[str, pd.DataFrame]:
    """The rates of every stack size at every thread count, and the candidates' step times."""
    data = small_test(pai.load_dataset(setting.dataset, root=root, device=device))
    spec = pai.dataset_spec(setting.dataset)
    rows, candidate_rows, floor_rows, compile_rows = [], [], [], []
    default_threads = torch.get_num_threads()
    for threads in args.threads or [default_threads]:
        torch.set_num_threads(threads)
        one_after_another(setting, data, 1, device)  # warm-up: allocator, kernels
        for runs in setting.stacks:
            sequential = min(
                one_after_another(setting, data, runs, device) for _ in range(args.repeats)
            )
            together = min(stacked(setting, data, runs, device) for _ in range(args.repeats))
            samples = runs * setting.steps * setting.batch_size
            rows.append(
                {
                    "threads": threads,
                    "K": runs,
                    "one_after_another_samples_per_s": round(samples / sequential, 1),
                    "stacked_samples_per_s": round(samples / together, 1),
                    "speedup": round(sequential / together, 2),
                    "load_average": round(os.getloadavg()[0], 1),
                }
            )
            print(setting.model, rows[-1], flush=True)
            floor = floor_row(setting, threads, runs, device, samples / sequential)
            if floor is not None:
                floor_rows.append(floor)
                print(setting.model, floor, flush=True)
        baseline = dataloader_loop(
            setting.model,
            spec,
            root,
            device,
            max(setting.steps, 20),
            setting.batch_size,
            args.workers,
        )
        rows.append(
            {
                "threads": threads,
                "K": "DataLoader",
                "one_after_another_samples_per_s": round(baseline, 1),
            }
        )
        for runs in (4, 16) if args.candidates else ():
            if runs in setting.stacks:
                seconds = candidate_step_seconds(setting, runs, device, max(3, setting.steps // 4))
                candidate_rows.append(
                    {"threads": threads, "K": runs, **{k: round(v, 5) for k, v in seconds.items()}}
                )
                print(setting.model, candidate_rows[-1], flush=True)
        if args.compile_candidate:
            seconds = compiled_step_seconds(setting, device, max(100, setting.steps))
            compile_rows.append(
                {"threads": threads, **{k: round(v, 6) for k, v in seconds.items()}}
            )
            print(setting.model, compile_rows[-1], flush=True)
    torch.set_num_threads(default_threads)
    return {
        "rates": pd.DataFrame(rows),
        "candidates": pd.DataFrame(candidate_rows),
        "floor": pd.DataFrame(floor_rows),
        "compile": pd.DataFrame(compile_rows),
    }


def report(setting: Setting, device, tables: dict[str, pd.DataFrame], wall) -> str:
    table, candidates, floor = tables["rates"], tables["candidates"], tables["floor"]
    lines = [
        f"# Stacked training: {setting.model} on {setting.dataset} ({device.type})",
        "",
        f"Batch {setting.batch_size}, {setting.steps} steps per run, SGD with momentum, "
        "constant learning rate. Aggregate samples per second of K runs trained one after "
        "the other by `pai.train` and of the same K runs in one stack by `pai.train_many` "
        "(same seeds and initial weights), in one process, evaluations excluded. The "
        "DataLoader row is the open_lth-style loop of `bench_train.py` (one run), the outside "
        "baseline. `load_average` is the machine's 1-minute load when the row was measured "
        "(other processes share the CPU).",
        "",
        table.to_markdown(index=False),
    ]
    if len(candidates):
        lines += [
            "",
            "Seconds per step (forward, backward, SGD step) of a stack built each way: pai's "
            "stacked module with batched kernels (grouped convolutions, batched matmuls for "
            "the Linear layers and their gradients) or with the solo kernels once per run (what a CPU "
            "gets, `BATCHED_KERNELS`), and `torch.func.stack_module_state` + "
            "`vmap(functional_call)`:",
            "",
            candidates.to_markdown(index=False),
        ]
    if len(floor):
        lines += [
            "",
            "The arithmetic floor: the matrix products of one training step (every Linear's "
            "forward product, weight gradient and input gradient, none for the first layer's "
            "input), by bare `torch.mm` run after run and by `torch.bmm` over the stack of K, "
            "on preallocated tensors, with no autograd, optimizer, masks, elementwise work or "
            "data. A stack shares everything else of a step, never these products, so "
            "`speedup_ceiling` (the faster floor over one run after another) bounds what any "
            "way of stacking can reach on this device:",
            "",
            floor.to_markdown(index=False),
        ]
    if len(tables["compile"]):
        lines += [
            "",
            "One run's training step (forward, backward, SGD with momentum), eager and under "
            "`torch.compile` (mode `reduce-overhead`, CUDA graphs, on CUDA; the default mode "
            "on a CPU), the candidate for a `--compile` flag, with the seconds its first, "
            "compiling, step took:",
            "",
            tables["compile"].to_markdown(index=False),
        ]
    if setting.note:
        lines += ["", setting.note]
    lines += [
        "",
        provenance_markdown(current_command(), wall, device=device).replace(
            "# Provenance", "## Provenance"
        ),
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default=None)
    parser.add_argument("--only", nargs="*", default=None, help="models of the preset to run")
    parser.add_argument("--repeats", type=int, default=1, help="best of this many, per K")
    parser.add_argument("--candidates", action="store_true", help="also time vmap stacking")
    parser.add_argument(
        "--compile-candidate", action="store_true", help="also time torch.compile of one run"
    )
    parser.add_argument("--workers", type=int, default=0, help="DataLoader workers of the baseline")
    parser.add_argument("--threads", type=int, nargs="*", help="torch CPU thread counts to run")
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--device", default=None)
    parser.add_argument("--out", default=str(Path(__file__).parents[1] / "results" / "perf"))
    args = parser.parse_args(argv)
    device = resolve_device(args.device)
    preset = args.preset or ("gpu" if device.type == "cuda" else "cpu")
    root = resolve_data_root(args.data_root)
    for setting in PRESETS[preset]:
        if args.only and setting.model not in args.only:
            continue
        start = time.perf_counter()
        tables = measure(setting, root, device, args)
        wall = time.perf_counter() - start
        name = f"stack-{setting.model}-{setting.dataset}-{device.type}"
        print(f"{name}: {wall:.0f} s", flush=True)
        out = Path(args.out)
        atomic_write_text(out / f"{name}.csv", tables["rates"].to_csv(index=False))
        text = report(setting, device, tables, wall)
        atomic_write_text(out / f"{name}.md", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
