"""Executors: where the tasks of a sweep run, in this process or on a dask.distributed cluster.

A sweep is planned up front as a graph of tasks, one per stored run (a ticket trained, an IMP
level, a collapse search), each after the tasks whose runs it reads (`Task.after`). A task is a
module-level function and picklable arguments (configs, paths, names), so any process can
compute it; it writes its run into the store, a path every worker sees, and returns a small
summary (a table row, a line), never tensors. Runs are claimed in the store (`Run.claim`), so a
task given to two workers, or to two sweeps, computes its run once.

`scheduler` names the cluster (`parse_scheduler`): `local:N` starts a `LocalCluster` of N
single-threaded worker processes on this machine; `tcp://host:port` (or another dask address)
connects to a running scheduler (dask-jobqueue, dask-cuda, `dask scheduler` + `dask worker`);
a path is a scheduler file as `dask scheduler --scheduler-file` writes it. The client does no
work of its own before the fan-out and never touches CUDA: workers choose their devices.

A task that raises does not stop the sweep: it is reported at the end (`RunsFailed`), tasks
after it are skipped, the others go on. A worker that dies (kill -9, preemption) has its task
retried elsewhere by the scheduler. Ctrl-C cancels what is queued and keeps finished runs.
"""

from __future__ import annotations

import logging
import os
import sys
import traceback
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from pai.core.errors import PaiError

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 5  # how long to wait for a scheduler before saying it is unreachable
LOCAL_PREFIX = "local:"
# dask's nanny starts every worker with MALLOC_TRIM_THRESHOLD_=65536, which turns off glibc's
# dynamic mmap threshold: each activation-sized tensor torch allocates is then a fresh mmap,
# and a CPU worker spent half its time in the kernel (a 5-epoch LeNet-5 run: 94 s in a worker
# against 38 s in this process). Local workers start without it (None unsets it).
WORKER_ENVIRON_UNSET = {"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None}
# Addresses of a running scheduler, by protocol (as dask spells them).
PROTOCOLS: tuple[str, ...] = ("tcp://", "tls://", "ucx://", "ws://", "wss://", "inproc://")
GPU = "GPU"  # the worker resource `dask worker --resources GPU=1` declares


@dataclass(frozen=True)
class Task:
    """One run of a sweep: `fn(*args)` computes it in any process and returns its summary.

    `key` is unique in the sweep (the run's directory under the store), `after` the keys of
    the tasks whose runs it reads, `label` what progress lines call it, `config` its identity
    as one line (for the failure report), `trains` whether it trains (it then asks for a GPU
    when the workers declare them).
    """

    key: str
    fn: Callable[..., Any]
    args: tuple[Any, ...]
    after: tuple[str, ...] = ()
    label: str = ""
    config: str = ""
    trains: bool = True


@dataclass(frozen=True)
class Failure:
    """A task that raised (or was skipped because one it needs did): what and why, in a line."""

    task: Task
    error: str

    def line(self) -> str:
        return f"{self.task.label or self.task.key}: {self.error} [config: {self.task.config}]"


class RunsFailed(Exception):
    """Some runs of a sweep failed; the others finished and are kept, and `result` is what
    the experiment made of them (its table)."""

    def __init__(self, failures: Sequence[Failure], result: Any = None):
        self.failures = list(failures)
        self.result = result
        super().__init__(f"{len(self.failures)} run(s) failed")

    def report(self) -> str:
        """One line per failed run: its label, the error's first line and its config."""
        return "\n".join(f"failed: {failure.line()}" for failure in self.failures)


@dataclass(frozen=True)
class _Failed:
    """The result of a task that raised, or was not computed because a task it needs did."""

    error: str


def first_line(error: BaseException) -> str:
    """`Type: message` of an exception, its message cut at the first line."""
    message = str(error).strip().splitlines()
    return f"{type(error).__name__}: {message[0]}" if message else type(error).__name__


def call_task(fn: Callable[..., Any], args: tuple[Any, ...], *needed: Any) -> Any:
    """Compute one task: `fn(*args)`, unless a task it needs failed (`needed` holds their
    results); an exception becomes the task's `_Failed` result, so the sweep goes on."""
    for result in needed:
        if isinstance(result, _Failed):
            return _Failed(f"not run: a run it needs failed ({result.error})")
    try:
        return fn(*args)
    except Exception as error:  # reported at the end with the run's config
        log.info("task failed:\n%s", traceback.format_exc())
        return _Failed(first_line(error))


# --- where: this process, or a dask cluster ---------------------------------------------------


@dataclass(frozen=True)
class SchedulerSpec:
    """A parsed `--scheduler`: `local` workers, or an `address`, or a scheduler `file`."""

    local: int | None = None
    address: str | None = None
    file: Path | None = None


def parse_scheduler(text: str) -> SchedulerSpec:
    """`local:N`, a scheduler address (`tcp://host:port`, ...) or a scheduler file's path."""
    text = text.strip()
    if text.startswith(LOCAL_PREFIX):
        count = text.removeprefix(LOCAL_PREFIX)
        if not count.isdigit() or int(count) < 1:
            raise PaiError(f"scheduler {text!r}: local:N needs a whole number of workers >= 1")
        return SchedulerSpec(local=int(count))
    if text.startswith(PROTOCOLS):
        return SchedulerSpec(address=text)
    path = Path(text).expanduser()
    if not path.is_file():
        raise PaiError(
            f"scheduler {text!r} is neither local:N, an address such as tcp://host:8786, nor an "
            "existing scheduler file (dask scheduler --scheduler-file FILE writes one)"
        )
    return SchedulerSpec(file=path)


def _distributed():
    try:
        import distributed
    except ImportError:
        raise PaiError(
            "--scheduler needs dask.distributed, which is not installed; "
            'pip install "pai[dask]" (or dask distributed)'
        ) from None
    return distributed


def check_stack_request(stack: int | None, scheduler: str | None) -> None:
    """PaiError for a stack size that is not a whole number >= 1 (or None), or a stack of
    several runs with a scheduler, whose every task is one run."""
    if stack is not None and (isinstance(stack, bool) or not isinstance(stack, int) or stack < 1):
        raise PaiError(f"stack must be a whole number >= 1 (or None), got {stack!r}")
    if stack not in (None, 1) and scheduler is not None:
        raise PaiError(
            f"stack={stack} stacks runs in this process; with scheduler {scheduler!r} every run "
            "is its own task: give stack=None or 1"
        )


def check_scheduler(scheduler: str) -> None:
    """PaiError, before anything runs, for a `scheduler` that cannot work: a bad spelling, a
    missing scheduler file, dask.distributed not installed, or a scheduler not reachable."""
    spec = parse_scheduler(scheduler)
    _distributed()
    if spec.local is None:  # a running scheduler: reachable now, before any work is planned
        with connect(scheduler):
            pass


@contextmanager
def connect(scheduler: str) -> Iterator[Any]:
    """A `distributed.Client` for `scheduler`, closed (with its LocalCluster) on exit.

    PaiError, one line, when distributed is missing, the scheduler file does not exist or the
    address cannot be reached within `CONNECT_TIMEOUT_S`.
    """
    spec = parse_scheduler(scheduler)
    distributed = _distributed()
    with _quiet_distributed():
        yield from _connected(distributed, spec, scheduler)


@contextmanager
def _quiet_distributed() -> Iterator[None]:
    """distributed's own lines (workers starting, closing, killed at close) hidden unless pai
    is verbose; the sweep's failures are reported by pai."""
    logger = logging.getLogger("distributed")
    level = logger.level
    if logging.getLogger("pai").getEffectiveLevel() > logging.INFO:
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _connected(distributed, spec: SchedulerSpec, scheduler: str) -> Iterator[Any]:
    cluster = None
    try:
        if spec.local is not None:
            import dask.config

            with dask.config.set(WORKER_ENVIRON_UNSET):
                cluster = distributed.LocalCluster(
                    n_workers=spec.local,
                    threads_per_worker=1,
                    processes=True,
                    host="127.0.0.1",
                    dashboard_address="127.0.0.1:0",
                    silence_logs=logging.ERROR,
                )
            client = distributed.Client(cluster)
        elif spec.address is not None:
            client = distributed.Client(spec.address, timeout=CONNECT_TIMEOUT_S)
        else:
            client = distributed.Client(scheduler_file=str(spec.file), timeout=CONNECT_TIMEOUT_S)
    except (OSError, TimeoutError) as error:
        if cluster is not None:
            cluster.close()
        raise PaiError(
            f"cannot reach the dask scheduler {scheduler!r} within {CONNECT_TIMEOUT_S} s "
            f"({first_line(error)}); is it running?"
        ) from None
    try:
        yield client
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def dashboard_line(client: Any) -> str | None:
    """Where the cluster's dashboard is, or None when the scheduler serves none."""
    try:
        services = client.scheduler_info(n_workers=0).get("services", {})
    except Exception:  # an older scheduler: no services reported
        return None
    return f"dask dashboard: {client.dashboard_link}" if "dashboard" in services else None


def workers_have_gpus(client: Any) -> bool:
    """Whether some worker declares the GPU resource (`dask worker --resources GPU=1`,
    dask-cuda's workers with `resources={"GPU": 1}`). Asked when the sweep is submitted: on a
    batch system, wait for the first worker first (`Client.wait_for_workers`)."""
    workers = client.scheduler_info(n_workers=-1).get("workers", {})
    return any(GPU in info.get("resources", {}) for info in workers.values())


# --- running a graph --------------------------------------------------------------------------

# Called in the client as each task ends, with the task and what it returned.
OnDone = Callable[[Task, Any], None]


def run_tasks(
    tasks: Sequence[Task],
    scheduler: str | None = None,
    *,
    on_done: OnDone | None = None,
    progress: bool | None = None,
) -> list[Failure]:
    """Compute `tasks` (in an order that puts each after its `after`), in this process or on
    `scheduler`; the failures, in task order. Keys in `after` that are not among `tasks` are
    done already. A progress bar over the tasks shows on a terminal.
    """
    show = sys.stderr.isatty() if progress is None else progress
    keys = {task.key for task in tasks}
    if len(keys) != len(tasks):
        raise PaiError("a sweep plans some run twice; every task key must be unique")
    bar = tqdm(total=len(tasks), unit="run", disable=not show, dynamic_ncols=True)
    failures: dict[str, Failure] = {}

    def finished(task: Task, result: Any) -> None:
        if isinstance(result, _Failed):
            failures[task.key] = Failure(task, result.error)
        elif on_done is not None:
            on_done(task, result)
        bar.update(1)

    with bar:
        if scheduler is None:
            results: dict[str, Any] = {}
            for task in tasks:
                needed = [results[k] for k in task.after if k in keys]
                results[task.key] = call_task(task.fn, task.args, *needed)
                finished(task, results[task.key])
        else:
            _run_on_cluster(tasks, scheduler, finished)
    order = {task.key: index for index, task in enumerate(tasks)}
    return sorted(failures.values(), key=lambda failure: order[failure.task.key])


def _run_on_cluster(
    tasks: Sequence[Task], scheduler: str, finished: Callable[[Task, Any], None]
) -> None:
    """Submit every task with its dependencies, then collect results as they complete."""
    distributed = _distributed()
    with connect(scheduler) as client:
        link = dashboard_line(client)
        if link is not None:
            print(link, file=sys.stderr)
        resources = {GPU: 1} if workers_have_gpus(client) else None
        session = os.urandom(4).hex()  # keys of this sweep, apart from another client's
        futures: dict[str, Any] = {}
        by_future: dict[str, Task] = {}
        for task in tasks:
            needed = [futures[k] for k in task.after if k in futures]
            future = client.submit(
                call_task,
                task.fn,
                task.args,
                *needed,
                key=f"{task.key.replace('/', ':')}-{session}",
                pure=False,
                resources=resources if task.trains else None,
            )
            futures[task.key] = future
            by_future[future.key] = task
        # results arrive as they complete, fetched concurrently and handed over in batches
        completed = distributed.as_completed(
            list(futures.values()), with_results=True, raise_errors=False
        )
        try:
            for batch in completed.batches():
                for future, result in batch:
                    if isinstance(result, BaseException):  # the worker died too often, ...
                        result = _Failed(first_line(result))
                    finished(by_future[future.key], result)
        except BaseException:  # Ctrl-C (or the client failing): drop what is queued
            client.cancel(list(futures.values()))
            raise
