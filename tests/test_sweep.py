"""Sweeps on dask.distributed: one task per run, the same store and tables as in one process,
safe under worker deaths and two clients at once; errors are one line.

The cluster is a LocalCluster bound to 127.0.0.1 with two single-threaded worker processes.
The in-process references run with one torch thread too, so every number is compared for
equality: with the same thread count, CPU training is deterministic bit for bit.
"""

from __future__ import annotations

import operator
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from pai.cli import main
from pai.core.store import FILES
from pai.experiments.executors import Task, parse_scheduler, run_tasks
from pai.pruning.masks import Masks

distributed = pytest.importorskip("distributed")

SWEEP = [
    "--model", "lenet300", "--dataset", "mnist", "--methods", "random,magnitude,imp",
    "--compressions", "2", "--imp-rate", "0.5", "--seeds", "2", "--steps", "5",
    "--batch-size", "100", "--train-per-class", "10", "--device", "cpu",
]  # fmt: skip
TIMING = ["train_seconds"]  # wall time: the one column that differs between two sweeps


def _compare(out: Path, data_root: Path, *extra: str) -> list[str]:
    return ["compare", *SWEEP, "--data-root", str(data_root), "--out", str(out), *extra]


def _one_thread(argv: list[str]) -> int:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return main(argv)
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def cluster():
    """(scheduler address, a client of it): two worker processes of one thread each."""
    with (
        distributed.LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
        ) as local,
        distributed.Client(local) as client,
    ):
        yield local.scheduler_address, client


@pytest.fixture(scope="module")
def reference(tmp_path_factory, data_root) -> Path:
    """The sweep trained in this process."""
    out = tmp_path_factory.mktemp("in-process")
    assert _one_thread(_compare(out, data_root)) == 0
    return out


def _runs(out: Path) -> list[Path]:
    """Every complete run directory under `out/runs` (comparison runs and IMP levels)."""
    return sorted(p.parent.relative_to(out / "runs") for p in (out / "runs").rglob(FILES.marker))


def _table(out: Path) -> pd.DataFrame:
    table = pd.read_csv(out / "runs.csv").drop(columns=TIMING)
    return table.sort_values("run_dir").reset_index(drop=True)


def _assert_same_sweep(out: Path, reference: Path) -> None:
    assert _runs(out) == _runs(reference)
    for run in _runs(reference):
        for name in (FILES.masks, FILES.final):
            a, b = (
                torch.load(o / "runs" / run / name, weights_only=True) for o in (out, reference)
            )
            assert a.keys() == b.keys(), run
            assert all(torch.equal(a[k], b[k]) for k in a), (run, name)
        assert Masks.load(out / "runs" / run / FILES.masks) == Masks.load(
            reference / "runs" / run / FILES.masks
        )
    pd.testing.assert_frame_equal(_table(out), _table(reference))


def test_a_cluster_sweep_equals_the_in_process_one_and_a_rerun_trains_nothing(
    cluster, reference, tmp_path, data_root, capsys
):
    address, _ = cluster
    assert main(_compare(tmp_path, data_root, "--scheduler", address)) == 0
    err = capsys.readouterr().err
    assert "8 runs, 0 already complete" in err
    assert err.count("imp level-00 seed 0") == 1  # one IMP run per seed: dense reuses level 0
    _assert_same_sweep(tmp_path, reference)

    markers = {p: p.stat().st_mtime_ns for p in (tmp_path / "runs").rglob(FILES.marker)}
    assert main(_compare(tmp_path, data_root, "--scheduler", address)) == 0
    assert "8 runs, 8 already complete" in capsys.readouterr().err
    assert {p: p.stat().st_mtime_ns for p in markers} == markers


def _kill_a_busy_worker_after_the_first_run(client, runs: Path, killed: list) -> None:
    """SIGKILL a worker process busy with a task, once the first run is complete."""
    deadline = time.monotonic() + 300
    while not list(runs.glob(f"*/{FILES.marker}")) and time.monotonic() < deadline:
        time.sleep(0.05)
    while not killed and time.monotonic() < deadline:
        busy = [worker for worker, keys in client.processing().items() if keys]
        if busy:
            pid = client.run(os.getpid, workers=busy[:1])[busy[0]]
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
        time.sleep(0.05)


def test_a_worker_killed_mid_sweep_leaves_the_same_table(cluster, reference, tmp_path, data_root):
    address, client = cluster
    killed: list[int] = []
    killer = threading.Thread(
        target=_kill_a_busy_worker_after_the_first_run,
        args=(client, tmp_path / "runs", killed),
        daemon=True,
    )
    killer.start()
    assert main(_compare(tmp_path, data_root, "--scheduler", address)) == 0
    killer.join(timeout=5)
    assert killed, "no worker was busy after the first run finished"
    _assert_same_sweep(tmp_path, reference)
    client.wait_for_workers(2, timeout=120)  # the nanny restarts the killed worker


def _run_lines(err: str) -> dict[str, bool]:
    """label -> trained (False: found complete) of every per-run line of a sweep's stderr."""
    lines = {}
    for line in err.splitlines():
        if line.startswith("[") and "] " in line and ": " in line:
            label = line.split("] ", 1)[1].split(": ", 1)[0]
            lines[label] = "found complete" not in line
    return lines


def test_two_clients_sweeping_into_one_store_compute_every_run_once(
    cluster, reference, tmp_path, data_root
):
    address, _ = cluster
    store = tmp_path / "store"
    commands = [
        [sys.executable, "-m", "pai", *_compare(tmp_path / name, data_root)]
        + ["--store", str(store), "--scheduler", address]
        for name in ("a", "b")
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    clients = [subprocess.Popen(c, stderr=subprocess.PIPE, text=True, env=env) for c in commands]
    errs = [client.communicate(timeout=600)[1] for client in clients]
    assert [client.returncode for client in clients] == [0, 0], errs
    lines = [_run_lines(err) for err in errs]
    assert lines[0].keys() == lines[1].keys() and len(lines[0]) == 8 + 4  # runs + IMP levels
    for label in lines[0]:
        assert lines[0][label] != lines[1][label], f"{label}: trained by both or by neither"
    for name in ("a", "b"):
        pd.testing.assert_frame_equal(_table(tmp_path / name), _table(reference))


def test_imp_seeds_on_a_cluster_equal_the_in_process_runs(cluster, tmp_path, data_root):
    address, _ = cluster
    argv = [
        "imp", "--model", "lenet300", "--dataset", "mnist", "--steps", "5", "--batch-size",
        "100", "--train-per-class", "10", "--levels", "2", "--rate", "0.5", "--controls",
        "reinit", "--seeds", "2", "--device", "cpu", "--data-root", str(data_root),
    ]  # fmt: skip
    assert _one_thread([*argv, "--out", str(tmp_path / "one")]) == 0
    assert main([*argv, "--out", str(tmp_path / "cluster"), "--scheduler", address]) == 0
    tables = {}
    for out in ("one", "cluster"):
        roots = sorted((tmp_path / out).glob("imp-*"))
        assert len(roots) == 2
        tables[out] = [
            pd.read_csv(root / FILES.levels).filter(regex="^(?!.*wall_seconds)") for root in roots
        ]
        assert [r.name for r in roots] == [r.name for r in sorted((tmp_path / "one").glob("imp-*"))]
    for a, b in zip(tables["one"], tables["cluster"], strict=True):
        pd.testing.assert_frame_equal(a, b)


def test_collapse_on_a_cluster_equals_the_in_process_table(cluster, tmp_path, data_root):
    address, _ = cluster
    argv = ["collapse", "--model", "lenet300", "--dataset", "mnist", "--scorers"]
    argv += ["random,magnitude,snip", "--seeds", "2", "--device", "cpu"]
    argv += ["--data-root", str(data_root)]
    assert main([*argv, "--out", str(tmp_path / "one")]) == 0
    assert main([*argv, "--out", str(tmp_path / "cluster"), "--scheduler", address]) == 0
    a, b = (pd.read_csv(tmp_path / out / "collapse.csv") for out in ("one", "cluster"))
    pd.testing.assert_frame_equal(a.drop(columns="seconds"), b.drop(columns="seconds"))


@pytest.mark.parametrize("where", ["in-process", "cluster"])
def test_a_failing_task_is_reported_and_the_others_go_on(cluster, where):
    """Stdlib functions as tasks: any worker process can unpickle them."""
    tasks = [
        Task("a", operator.truediv, (1, 0), label="divide", config="1/0"),
        Task("b", operator.add, (1, 2), after=("a",), label="after it"),
        Task("c", operator.mul, (2, 3), label="other"),
    ]
    done = {}
    scheduler = cluster[0] if where == "cluster" else None
    failures = run_tasks(tasks, scheduler, on_done=lambda t, r: done.update({t.key: r}))
    assert done == {"c": 6}
    assert [f.task.key for f in failures] == ["a", "b"]
    assert failures[0].line() == "divide: ZeroDivisionError: division by zero [config: 1/0]"
    assert failures[1].error.startswith("not run: a run it needs failed (ZeroDivisionError")


def test_local_workers_start_without_dask_s_malloc_trim_threshold(monkeypatch):
    """dask's nanny would set MALLOC_TRIM_THRESHOLD_ in each worker, which made CPU training
    there 2.5 times slower (half of it in the kernel); pai's local workers start without it."""
    monkeypatch.delenv("MALLOC_TRIM_THRESHOLD_", raising=False)
    done = {}
    tasks = [Task("env", os.getenv, ("MALLOC_TRIM_THRESHOLD_", "unset"), label="env")]
    assert run_tasks(tasks, "local:1", on_done=lambda t, r: done.update({t.key: r})) == []
    assert done == {"env": "unset"}


def test_tasks_follow_what_they_read(data_root, tmp_path):
    """IMP levels chained, a ticket after its level, the dense run after level 0, a shuffle
    after its original; complete runs are left out."""
    from pai.cli import build_parser
    from pai.cli.compare import compare_config
    from pai.data.loading import load_for_training
    from pai.experiments.compare.plan import plan_runs, run_for
    from pai.experiments.compare.tasks import sweep_tasks
    from pai.experiments.compare.tickets import TicketFinder

    argv = _compare(tmp_path, data_root, "--sanity", "shuffle", "--compressions", "2,4")
    config = compare_config(build_parser().parse_args(argv))
    data = load_for_training("mnist", root=data_root, device="cpu", train_per_class=10)
    store = tmp_path / "runs"
    finder = TicketFinder(config, data, store, device=torch.device("cpu"))
    specs = [s for s in plan_runs(config) if s.seed == 0]
    tasks = {t.key: t for t in sweep_tasks(config, specs, store, finder, data_root=data_root,
                                           device="cpu", checkpoint=None)}  # fmt: skip
    name = {s.label: run_for(s, store).path.name for s in specs}
    levels = sorted(k for k in tasks if "/level-" in k)
    assert len(levels) == 3  # IMP at rate 0.5 reaches 2 and 4 at levels 1 and 2
    assert [tasks[k].after for k in levels] == [(), (levels[0],), (levels[1],)]
    assert tasks[name["dense seed 0"]].after == (levels[0],)
    assert tasks[name["imp original x2 seed 0"]].after == (levels[1],)
    assert tasks[name["imp original x4 seed 0"]].after == (levels[2],)
    assert tasks[name["imp shuffle x4 seed 0"]].after == (levels[2], name["imp original x4 seed 0"])
    assert tasks[name["random shuffle x2 seed 0"]].after == (name["random original x2 seed 0"],)
    assert tasks[name["random original x2 seed 0"]].after == ()
    # a complete level is not a task, and nothing waits for it
    first = store / levels[0]
    first.mkdir(parents=True)
    (first / FILES.marker).write_text("{}")
    again = {t.key: t for t in sweep_tasks(config, specs, store, finder, data_root=data_root,
                                           device="cpu", checkpoint=None)}  # fmt: skip
    assert levels[0] not in again and again[levels[1]].after == ()
    assert again[name["dense seed 0"]].after == ()


@pytest.mark.parametrize(
    ("scheduler", "message"),
    [
        ("tcp://127.0.0.1:9", "cannot reach the dask scheduler 'tcp://127.0.0.1:9' within 5 s"),
        ("/nonexistent/scheduler.json", "neither local:N, an address"),
        ("local:0", "local:N needs a whole number of workers >= 1"),
    ],
)
def test_a_scheduler_that_cannot_work_is_one_line_and_exit_2(
    tmp_path, data_root, capsys, scheduler, message
):
    assert main(_compare(tmp_path, data_root, "--scheduler", scheduler)) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err
    assert not (tmp_path / "runs").exists()


def test_without_distributed_the_scheduler_flag_is_one_line_and_exit_2(
    tmp_path, data_root, capsys, monkeypatch
):
    monkeypatch.setitem(sys.modules, "distributed", None)  # import distributed fails
    assert main(_compare(tmp_path, data_root, "--scheduler", "local:2")) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "needs dask.distributed, which is not installed" in err


def test_scheduler_spellings():
    assert parse_scheduler("local:4").local == 4
    assert parse_scheduler("tcp://head:8786").address == "tcp://head:8786"


def test_preset_passes_the_scheduler_to_the_commands_that_sweep(tmp_path, capsys):
    preset = tmp_path / "p.toml"
    preset.write_text(
        '[[run]]\ncommand = "compare"\n[run.args]\nout = "a"\n'
        '[[run]]\ncommand = "train"\n[run.args]\nout = "b"\n'
    )
    assert main(["preset", str(preset), "--dry-run", "--scheduler", "local:2"]) == 0
    compare, train = capsys.readouterr().out.strip().splitlines()
    assert compare.endswith("--scheduler local:2") and "--scheduler" not in train


@pytest.mark.slow
def test_ctrl_c_cancels_the_queue_keeps_finished_runs_and_exits_130(tmp_path, data_root):
    command = [
        sys.executable,
        "-m",
        "pai",
        *_compare(tmp_path, data_root, "--scheduler", "local:1"),
    ]
    client = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    for line in client.stderr:
        if line.startswith("[1/"):
            client.send_signal(signal.SIGINT)
            break
    err = client.communicate(timeout=120)[1]
    assert client.returncode == 130, err
    assert "interrupted; finished runs are kept" in err
    finished = _runs(tmp_path)
    assert 1 <= len(finished) < 12


def test_training_tasks_ask_for_a_gpu_only_where_workers_declare_one(cluster):
    from pai.experiments.executors import workers_have_gpus

    _, client = cluster
    assert not workers_have_gpus(client)  # so tasks ask for nothing (they would wait forever)
    with (
        distributed.LocalCluster(
            n_workers=1, threads_per_worker=1, host="127.0.0.1", dashboard_address=None,
            resources={"GPU": 1},
        ) as gpus,
        distributed.Client(gpus) as gpu_client,
    ):  # fmt: skip
        assert workers_have_gpus(gpu_client)
        tasks = [Task(str(i), operator.mul, (i, 2), trains=i % 2 == 0) for i in range(4)]
        done = {}
        failures = run_tasks(
            tasks, gpus.scheduler_address, on_done=lambda t, r: done.update({t.key: r})
        )
        assert not failures and done == {"0": 0, "1": 2, "2": 4, "3": 6}


def test_a_run_that_fails_on_a_worker_is_reported_the_others_finish_exit_1(
    cluster, reference, tmp_path, data_root, capsys
):
    address, _ = cluster
    table = pd.read_csv(reference / "runs.csv")
    broken = table[table.method == "random"].run_dir.iloc[0]
    (tmp_path / "runs" / f".{broken}.lock").mkdir(parents=True)  # its claim cannot be taken
    assert main(_compare(tmp_path, data_root, "--scheduler", address)) == 1
    err = capsys.readouterr().err
    (failed,) = [line for line in err.splitlines() if line.startswith("failed: ")]
    assert failed.startswith("failed: random original x2 seed 0: IsADirectoryError")
    assert '"method": "random"' in failed  # the run's config
    finished = pd.read_csv(tmp_path / "runs.csv")
    assert sorted(finished.run_dir) == sorted(set(table.run_dir) - {broken})
