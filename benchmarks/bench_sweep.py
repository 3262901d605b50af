"""Sweeps on dask.distributed: what the cluster path costs per run, and how far one scheduler
carries a sweep.

(a) overhead: the same comparison of many tiny runs (lenet300 on MNIST, `--steps` each),
    trained in this process with one torch thread and then on a LocalCluster of single-threaded
    workers (`--workers`, default 1 so that the work matches the in-process run's); the report
    is milliseconds per run of each path, their difference (the per-run overhead: task
    submission, pickling, the worker's claim and store checks, the result's trip back) and the
    cluster's start-up and shutdown, measured apart.
(b) scale: a planned comparison of `--scale-runs` runs (every run a task, each shuffle row after
    its original) whose tasks do nothing, through a LocalCluster of `--workers` workers: the
    planning time, the scheduler's throughput in runs per second, and the client's resident
    memory before and after.

Both write a markdown table with its provenance into `--out` (default results/perf):

    python benchmarks/bench_sweep.py --data-root ../shared/data
"""

from __future__ import annotations

import argparse
import gc
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from pai.core.atomic import atomic_write_text
from pai.experiments.compare.config import CompareConfig
from pai.experiments.compare.plan import plan_runs, run_for
from pai.experiments.compare.run import run_comparison
from pai.experiments.executors import Task, connect, run_tasks
from pai.report.provenance import current_command, provenance_markdown
from pai.training.config import TrainConfig


def tiny_comparison(runs: int, steps: int) -> CompareConfig:
    """`runs` lenet300 runs of `steps` steps: the dense run and random pruning at runs - 1
    compressions, one seed, on a 100-image training subset, one evaluation at the end."""
    train = TrainConfig(budget=f"{steps}it", batch_size=100, eval_every=f"{steps}it")
    compressions = tuple(float(c) for c in np.geomspace(1.5, 100, runs - 1))
    return CompareConfig("lenet300", "mnist", ("random",), compressions, train, train_per_class=10)


def measure_overhead(args: argparse.Namespace) -> pd.DataFrame:
    config = tiny_comparison(args.runs, args.steps)
    threads = torch.get_num_threads()
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        torch.set_num_threads(1)
        started = time.perf_counter()
        # one run at a time, as each cluster task trains (a stack's runs share one loop time)
        run_comparison(config, Path(scratch) / "local", data_root=args.data_root, device="cpu",
                       progress=False, checkpoint=None, stack=1)  # fmt: skip
        local = time.perf_counter() - started
        torch.set_num_threads(threads)

        started = time.perf_counter()
        with connect(f"local:{args.workers}") as client:
            client.wait_for_workers(args.workers)
            up = time.perf_counter() - started
            address = client.scheduler.address
            started = time.perf_counter()
            run_comparison(config, Path(scratch) / "cluster", data_root=args.data_root,
                           device="cpu", progress=False, checkpoint=None,
                           scheduler=address)  # fmt: skip
            cluster = time.perf_counter() - started
            closing = time.perf_counter()
        down = time.perf_counter() - closing
        same, other = (pd.read_csv(Path(scratch) / d / "runs.csv") for d in ("local", "cluster"))
        trained = [1000 * table["train_seconds"].mean() for table in (same, other)]
        same, other = (table.drop(columns="train_seconds") for table in (same, other))
        identical = (
            same.sort_values("run_dir")
            .reset_index(drop=True)
            .equals(other.sort_values("run_dir").reset_index(drop=True))
        )
    rows.append(
        {
            "runs": args.runs,
            "steps_per_run": args.steps,
            "workers": args.workers,
            "in_process_ms_per_run": 1000 * local / args.runs,
            "cluster_ms_per_run": 1000 * cluster / args.runs,
            "overhead_ms_per_run": 1000 * (cluster - local) / args.runs,
            "in_process_training_ms": trained[0],
            "cluster_training_ms": trained[1],
            "cluster_start_s": up,
            "cluster_close_s": down,
            "same_runs_csv": identical,
            "load_avg_1min": os.getloadavg()[0],
        }
    )
    return pd.DataFrame(rows)


def nothing(*_: object) -> dict[str, bool]:
    """The no-op trainer: a task that stores nothing."""
    return {"trained": False}


def scale_tasks(runs: int, store: Path) -> list[Task]:
    """The tasks of a planned comparison of about `runs` runs: random and magnitude at
    runs / 4 compressions, each with a shuffle row after its original."""
    train = TrainConfig(budget="1it")
    compressions = tuple(float(c) for c in np.geomspace(1.01, 1000, runs // 4))
    config = CompareConfig(
        "lenet300", "mnist", ("random", "magnitude"), compressions, train, sanity=("shuffle",)
    )
    tasks = []
    keys = {}
    for spec in plan_runs(config):
        key = run_for(spec, store).path.name
        keys[(spec.method, spec.compression, spec.variant)] = key
        original = keys.get((spec.method, spec.compression, "original"))
        after = (original,) if spec.variant == "shuffle" else ()
        tasks.append(Task(key, nothing, (), after, spec.label, trains=False))
    return tasks


def rss_mib() -> float:
    """The resident memory of this process now, in MiB."""
    import psutil  # a dependency of distributed

    return psutil.Process().memory_info().rss / 2**20


def peak_rss_mib() -> float:
    """The peak resident memory of this process so far, in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure_scale(args: argparse.Namespace) -> pd.DataFrame:
    gc.collect()
    before = rss_mib()
    started = time.perf_counter()
    tasks = scale_tasks(args.scale_runs, Path(tempfile.gettempdir()) / "pai-bench-sweep")
    planning = time.perf_counter() - started
    with connect(f"local:{args.workers}") as client:
        client.wait_for_workers(args.workers)
        address = client.scheduler.address
        done = []
        started = time.perf_counter()
        failures = run_tasks(
            tasks, address, on_done=lambda t, r: done.append(t.key), progress=False
        )
        elapsed = time.perf_counter() - started
    return pd.DataFrame(
        [
            {
                "runs": len(tasks),
                "dependent_runs": sum(bool(t.after) for t in tasks),
                "workers": args.workers,
                "planning_s": planning,
                "submit_to_last_result_s": elapsed,
                "runs_per_s": len(done) / elapsed,
                "failed": len(failures),
                "client_rss_before_mib": before,
                "client_rss_after_mib": rss_mib(),
                "client_peak_rss_mib": peak_rss_mib(),
                "load_avg_1min": os.getloadavg()[0],
            }
        ]
    )


LOAD_NOTE = (
    "load_avg_1min is the machine's load when the measurement ended: above its core count, "
    "other processes shared the CPUs and every time here is inflated by them."
)


def write(table: pd.DataFrame, out: Path, name: str, title: str, note: str, wall: float) -> None:
    text = f"# {title}\n\n{table.to_markdown(index=False, floatfmt='.4g')}\n\n{note}\n\n"
    text += LOAD_NOTE + "\n\n"
    text += provenance_markdown(current_command(), wall, device="cpu").replace("# ", "## ", 1)
    atomic_write_text(out / f"{name}.md", text)
    atomic_write_text(out / f"{name}.csv", table.to_csv(index=False))
    print(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--runs", type=int, default=64, help="tiny runs of the overhead test")
    parser.add_argument("--steps", type=int, default=20, help="training steps of each")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--scale-runs", type=int, default=10_000)
    parser.add_argument("--only", choices=("overhead", "scale"), default=None)
    parser.add_argument("--out", type=Path, default=Path("results/perf"))
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.only in (None, "overhead"):
        started = time.perf_counter()
        table = measure_overhead(args)
        note = (
            "The same comparison twice: in this process with one torch thread, one run at a "
            "time (`stack=1`), then as one task per run on a LocalCluster of single-threaded "
            "worker processes (workers connected before the clock starts; start-up and "
            "shutdown are the last columns). "
            "The overhead is the difference per run: submitting the task, pickling its "
            "arguments, the worker's store checks and claim, the row's trip back. The training "
            "columns are the mean time each run measured inside its own training (train_seconds "
            "of runs.csv): where they differ, the machine's load slowed the training itself. "
            "same_runs_csv: the two runs.csv agree in every column but the wall time."
        )
        write(table, args.out, "sweep-overhead", "Sweep overhead: cluster against in-process",
              note, time.perf_counter() - started)  # fmt: skip
    if args.only in (None, "scale"):
        started = time.perf_counter()
        table = measure_scale(args)
        note = (
            "A planned comparison whose tasks do nothing, through one LocalCluster: planning "
            "(the run specs, their hashes and directory names), then every task submitted with "
            "its dependencies and every result collected as it completes. runs_per_s is what "
            "one scheduler and this client sustain; a real run takes seconds to hours, so a "
            "sweep is bounded by its workers long before this rate. Resident memory of the "
            "client process (it hosts the LocalCluster's scheduler too) before planning and "
            "after the sweep, and its peak; run with --only scale for a process that did "
            "nothing else."
        )
        write(table, args.out, "sweep-scale", "Sweep scale: no-op runs through one scheduler",
              note, time.perf_counter() - started)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
