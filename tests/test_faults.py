"""Bad input and faults, as a user meets them (lenet300 on MNIST, tiny budgets).

The rule for every case: a non-zero exit, the first line on stderr names the bad value (or the
file) and what is allowed, no traceback, and nothing written that a later run could take for a
finished run. A damaged run store is the exception that proves it: a finished run whose files
no longer read back is named in one line, moved aside (never deleted) and computed again.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import pai
from pai.cli import main
from pai.core.atomic import atomic_torch_save
from pai.core.errors import PaiError
from pai.models import build_model
from pai.pruning.levels import pruning_plan
from pai.pruning.masks import Masks, prunable_parameters
from pai.pruning.registry import Scorer, register_scorer, unregister_scorer
from pai.testing import toy_mlp

SMALL = ["--model", "lenet300", "--dataset", "mnist", "--device", "cpu"]
BUDGET = ["--steps", "5", "--train-per-class", "10", "--batch-size", "20"]


@dataclass
class Result:
    code: int
    out: str
    err: str

    @property
    def first(self) -> str:
        lines = self.err.strip().splitlines()
        return lines[0] if lines else ""


def cli(argv: list[str], capsys) -> Result:
    """`pai ARGV` in this process: exit code, stdout, stderr."""
    capsys.readouterr()
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exit_:
        code = int(exit_.code)
    out, err = capsys.readouterr()
    return Result(code, out, err)


def cli_process(argv: list[str], data_root: Path, **options) -> Result:
    """`python -m pai ARGV` in a new process (for signals and resource limits)."""
    env = {**os.environ, "PAI_DATA_ROOT": str(data_root), "PYTHONDONTWRITEBYTECODE": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "pai", *map(str, argv)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        **options,
    )
    return Result(done.returncode, done.stdout, done.stderr)


def assert_refused(result: Result, *words: str, code: int = 2) -> None:
    """The rule: exit `code`, the first stderr line holds every word, no traceback."""
    assert result.code == code, result
    assert "Traceback" not in result.err, result.err
    for word in words:
        assert word in result.first, (word, result.first)


def assert_nothing_finished(path: Path) -> None:
    assert not list(path.rglob("COMPLETE")) if path.exists() else True


# --- a damaged run store --------------------------------------------------------------------


def _compare(out: Path, data_root: Path) -> list[str]:
    methods = ["--methods", "random,magnitude", "--compressions", "4", "--seeds", "2"]
    return ["compare", *SMALL, *BUDGET, *methods, "--data-root", data_root, "--out", out]


@pytest.fixture(scope="module")
def sweep(tmp_path_factory, data_root) -> Path:
    """random and magnitude at 4x, two seeds, 5 steps on 100 images: six runs."""
    out = tmp_path_factory.mktemp("sweep") / "out"
    assert main([str(a) for a in _compare(out, data_root)]) == 0
    return out


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _replace_with_file(path: Path) -> None:
    shutil.rmtree(path.parent)
    path.parent.write_text("not a run\n")


DAMAGE = {
    "truncated row": ("row.json", _truncate),
    "emptied row": ("row.json", lambda p: p.write_text("")),
    "garbage row": ("row.json", lambda p: p.write_bytes(os.urandom(64))),
    "empty object as row": ("row.json", lambda p: p.write_text("{}\n")),
    "truncated metrics": ("metrics.json", _truncate),
    "garbage masks": ("masks.pt", lambda p: p.write_bytes(b"\x00garbage" * 50)),
    "truncated final weights": ("final.pt", _truncate),
    "run folder replaced by a file": ("row.json", _replace_with_file),
}


@pytest.mark.parametrize("case", DAMAGE)
def test_a_damaged_run_is_named_moved_aside_and_computed_again(
    case, sweep, tmp_path, data_root, caplog, capsys
):
    out = tmp_path / "out"
    shutil.copytree(sweep, out)
    before = pd.read_csv(sweep / "runs.csv")
    name = before.query("method == 'magnitude' and seed == 1")["run_dir"].item()
    file, damage = DAMAGE[case]
    damage(out / "runs" / name / file)

    result = cli(_compare(out, data_root), capsys)

    assert result.code == 0, result
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    named = [w for w in warnings if name in w]
    assert len(named) == 1, warnings
    expected = name if case == "run folder replaced by a file" else file
    assert expected in named[0] and "moved to" in named[0]
    assert (out / "runs" / f"{name}.damaged-1").exists()  # kept, not deleted
    after = pd.read_csv(out / "runs.csv")
    assert len(after) == 6 and after["test_accuracy"].notna().all()
    assert pd.read_csv(out / "summary.csv")["n"].eq(2).all()  # every mean is over two seeds
    again = after.set_index("run_dir").loc[name]
    assert again["test_accuracy"] == before.set_index("run_dir").loc[name, "test_accuracy"]
    weights = torch.load(out / "runs" / name / "final.pt", weights_only=True)
    reference = torch.load(sweep / "runs" / name / "final.pt", weights_only=True)
    assert all(torch.equal(weights[k], reference[k]) for k in reference)


@pytest.fixture(scope="module")
def imp_run(tmp_path_factory, data_root) -> Path:
    """Two IMP levels after the dense one, 5 steps each on 100 images."""
    out = tmp_path_factory.mktemp("imp")
    argv = ["imp", *SMALL, *BUDGET, "--levels", "2", "--data-root", data_root, "--out", out]
    assert main([str(a) for a in argv]) == 0
    return out


@pytest.mark.parametrize("case", ["deleted rewind.pt", "garbage level metrics"])
def test_a_damaged_imp_level_is_trained_again(case, imp_run, tmp_path, data_root, caplog, capsys):
    out = tmp_path / "imp"
    shutil.copytree(imp_run, out)
    (root,) = out.glob("imp-*")
    before = (root / "levels.csv").read_text()
    if case == "deleted rewind.pt":
        (root / "rewind.pt").unlink()
        damaged, file = "level-00", "rewind.pt"
    else:
        (root / "level-01" / "metrics.json").write_text("{garbage")
        damaged, file = "level-01", "metrics.json"
    argv = ["imp", *SMALL, *BUDGET, "--levels", "2", "--data-root", data_root, "--out", out]

    result = cli(argv, capsys)

    assert result.code == 0, result
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any(damaged in w and file in w for w in warnings), warnings
    assert (root / f"{damaged}.damaged-1").is_dir()
    after = pd.read_csv(root / "levels.csv")
    reference = pd.read_csv(pd.io.common.StringIO(before))
    columns = ["level", "kept", "compression", "test_accuracy", "test_loss"]
    pd.testing.assert_frame_equal(after[columns], reference[columns])


def test_a_damaged_train_run_is_trained_again(tmp_path, data_root, caplog, capsys):
    argv = ["train", *SMALL, *BUDGET, "--data-root", data_root, "--out", tmp_path / "runs"]
    first = cli(argv, capsys)
    assert first.code == 0
    (run,) = [p for p in (tmp_path / "runs").iterdir() if p.is_dir()]
    _truncate(run / "metrics.json")

    again = cli(argv, capsys)

    assert again.code == 0 and "trained" in again.out and "already complete" not in again.out
    assert any(run.name in r.getMessage() and "metrics.json" in r.getMessage()
               for r in caplog.records)  # fmt: skip
    assert (run.parent / f"{run.name}.damaged-1").is_dir()
    accuracy = re.compile(r"test accuracy (\S+), test loss (\S+),")
    assert accuracy.search(again.out).groups() == accuracy.search(first.out).groups()


# --- user-given mask files ------------------------------------------------------------------


class _RunsCode:
    """A pickle that would create a file when unpickled."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def _mask_file(kind: str, tmp_path: Path) -> Path:
    path = tmp_path / "masks.pt"
    good = tmp_path / "good.pt"
    Masks.dense(build_model("lenet300", "mnist")).save(good)
    if kind == "garbage":
        path.write_bytes(os.urandom(300))
    elif kind == "truncated":
        path.write_bytes(good.read_bytes()[:1000])
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "json":
        path.write_text(json.dumps({"fc1.weight": [[True]]}))
    elif kind == "pickle with code":
        path.write_bytes(pickle.dumps(_RunsCode(tmp_path / "code-ran")))
    elif kind == "float tensors":
        torch.save({"features.1.weight": torch.ones(300, 784)}, path)
    elif kind == "folder":
        path.mkdir()
    return path


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize(
    "kind", ["garbage", "truncated", "empty", "json", "pickle with code", "float tensors", "folder"]
)
def test_a_bad_mask_file_is_one_line_and_trains_nothing(kind, tmp_path, data_root, capsys):
    path = _mask_file(kind, tmp_path)
    out = tmp_path / "runs"
    argv = ["train", *SMALL, *BUDGET, "--masks", path, "--data-root", data_root, "--out", out]

    result = cli(argv, capsys)

    why = {"folder": "is a folder", "float tensors": "torch.bool"}.get(kind, "is not a mask file")
    assert_refused(result, str(path), why)
    assert not out.exists()
    assert not (tmp_path / "code-ran").exists()  # weights_only: the pickle's code never ran


# --- the disk, not the input ----------------------------------------------------------------


def _limit_file_size() -> None:
    """Files written by the child may not exceed 64 KiB (`ulimit -f`): lenet300's mask is 260."""
    resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, 64 * 1024))


@pytest.mark.parametrize(
    "command",
    # each a new process (about 10 s of imports on a busy 2-core machine): two in the default run
    ["train", "compare", pytest.param("prune", marks=pytest.mark.slow),
     pytest.param("imp", marks=pytest.mark.slow)],
)  # fmt: skip
def test_a_full_disk_is_one_line_naming_the_file_and_marks_nothing_complete(
    command, tmp_path, data_root
):
    out = tmp_path / "out"
    argv = {
        "train": ["train", *SMALL, *BUDGET, "--out", out],
        "prune": ["prune", *SMALL, "--scorer", "magnitude", "--compression", "4", "--out",
                  out / "masks.pt"],
        "compare": ["compare", *SMALL, *BUDGET, "--methods", "magnitude", "--compressions", "4",
                    "--out", out],
        "imp": ["imp", *SMALL, *BUDGET, "--levels", "1", "--out", out],
    }[command]  # fmt: skip

    result = cli_process(argv, data_root, preexec_fn=_limit_file_size)

    lines = result.err.strip().splitlines()
    if command == "compare":  # the plan's line comes first: the disk fills while training
        assert lines[0] == "2 runs, 0 already complete"
        lines = lines[1:]
    assert result.code == 1 and len(lines) == 1 and "Traceback" not in result.err, result
    assert lines[0].startswith(f"pai {command}: error: cannot write '{out}")
    assert "File too large" in lines[0]
    assert_nothing_finished(out)


@pytest.mark.parametrize("command", ["train", "compare"])
def test_an_out_folder_that_cannot_be_made_is_one_line(command, tmp_path, data_root, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    out = blocker / "out"
    methods = ["--methods", "magnitude", "--compressions", "4"] if command == "compare" else []
    argv = [command, *SMALL, *BUDGET, *methods, "--data-root", data_root, "--out", out]

    assert_refused(cli(argv, capsys), str(blocker), "Not a directory", code=1)


@pytest.mark.parametrize("delay", [1.5, pytest.param(4.0, marks=pytest.mark.slow)])
def test_ctrl_c_while_starting_is_one_line_and_exit_130(delay, tmp_path, data_root):
    argv = ["compare", *SMALL, *BUDGET, "--methods", "magnitude", "--compressions", "4"]
    env = {**os.environ, "PAI_DATA_ROOT": str(data_root)}
    child = subprocess.Popen(
        [sys.executable, "-m", "pai", *map(str, argv), "--out", str(tmp_path / "out")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    time.sleep(delay)
    child.send_signal(signal.SIGINT)
    out, err = child.communicate(timeout=300)
    result = Result(child.returncode, out, err)
    assert_refused(result, "interrupted", code=130)
    assert len(err.strip().splitlines()) <= 2, err
    assert_nothing_finished(tmp_path / "out")


# --- errors before any output ---------------------------------------------------------------


def _no_network(monkeypatch) -> None:
    def refuse(*args, **kwargs):
        raise socket.gaierror("no network in this test")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)


@pytest.mark.parametrize(
    "change, words",
    [
        (["--model", "nope"], ["'nope'", "lenet300"]),
        (["--data-root", "NONEXISTENT"], ["mnist", "not found"]),
        (["--train-per-class", "100000"], ["100000", "5421"]),
        (["--compressions", "1e30"], ["1e+30", "allowed: 1 to 266200"]),
    ],
)
def test_an_error_is_the_first_line_of_output(
    change, words, tmp_path, data_root, capsys, monkeypatch
):
    _no_network(monkeypatch)
    out = tmp_path / "out"
    argv = ["compare", *SMALL, "--steps", "5", "--methods", "magnitude", "--compressions", "4"]
    argv += ["--data-root", data_root, "--out", out]
    for flag, value in zip(change[::2], change[1::2], strict=True):
        value = str(tmp_path / "absent") if value == "NONEXISTENT" else value
        if flag in argv:
            argv[argv.index(flag) + 1] = value
        else:
            argv += [flag, value]

    result = cli(argv, capsys)

    assert_refused(result, "pai compare: error:", *words)
    assert "already complete" not in result.err and result.out == ""
    assert_nothing_finished(out)


# --- silent changes to what was asked -------------------------------------------------------


@pytest.mark.parametrize(
    "argv, words",
    [
        (["compare", "--methods", "random,random", "--compressions", "4"], ["'random' twice"]),
        (["compare", "--methods", "random", "--compressions", "4,4"], ["'4' twice"]),
        (["collapse", "--scorers", "magnitude,magnitude"], ["scorers", "'magnitude' twice"]),
        (["imp", "--levels", "0"], ["levels 0", "levels >= 1"]),
    ],
)
def test_a_repeat_or_an_empty_request_is_refused(argv, words, tmp_path, data_root, capsys):
    command, *rest = argv
    budget = [] if command == "collapse" else ["--steps", "5"]
    full = [command, *SMALL, *budget, *rest, "--data-root", data_root, "--out", tmp_path / "out"]

    assert_refused(cli(full, capsys), *words)
    assert_nothing_finished(tmp_path / "out")


def test_imp_levels_beyond_reach_name_the_reachable_maximum(tmp_path, data_root, capsys):
    sizes = {n: p.numel() for n, p in prunable_parameters(build_model("lenet300", "mnist")).items()}
    reachable = len(pruning_plan(sizes, levels=1000)) - 1
    assert 40 < reachable < 1000  # 266,200 weights at rate 0.2: about 57 levels
    argv = ["imp", *SMALL, *BUDGET, "--levels", "1000", "--data-root", data_root]

    result = cli([*argv, "--out", tmp_path / "out"], capsys)

    assert_refused(result, "1000 levels", f"allowed: 1 to {reachable}")
    assert_nothing_finished(tmp_path / "out")


@pytest.mark.parametrize("root", ["NONEXISTENT", "", "/etc/passwd"])
def test_datasets_with_a_data_root_that_is_no_folder_is_an_error(root, tmp_path, capsys):
    root = str(tmp_path / "absent") if root == "NONEXISTENT" else root
    why = "is not a folder" if root == "/etc/passwd" else "does not exist"

    assert_refused(cli(["datasets", "--data-root", root], capsys), repr(root), why)


# --- plugins that misbehave -----------------------------------------------------------------


class _Plugin(Scorer):
    needs_data = False
    default_rounds = 1
    description = "misbehaves on purpose"


class _Raises(_Plugin):
    name = "fault-raises"

    def score(self, model, masks, context):
        raise RuntimeError("plugin exploded")


class _ReturnsNone(_Plugin):
    name = "fault-none"

    def score(self, model, masks, context):
        return None


class _ReturnsList(_Plugin):
    name = "fault-list"

    def score(self, model, masks, context):
        return [w.abs() for w in self.weights(model, masks).values()]


class _ReturnsNumpy(_Plugin):
    name = "fault-numpy"

    def score(self, model, masks, context):
        return {n: np.abs(w.detach().numpy()) for n, w in self.weights(model, masks).items()}


class _IntegerScores(_Plugin):
    name = "fault-integer"

    def score(self, model, masks, context):
        return {n: (w.abs() * 10).long() for n, w in self.weights(model, masks).items()}


class _ChangesWeights(_Plugin):
    name = "fault-changes-weights"

    def score(self, model, masks, context):
        with torch.no_grad():
            next(iter(self.weights(model, masks).values())).mul_(2)
        return {n: w.detach().abs() for n, w in self.weights(model, masks).items()}


class _ChangesMode(_Plugin):
    name = "fault-changes-mode"

    def score(self, model, masks, context):
        model.train()
        return {n: w.detach().abs() for n, w in self.weights(model, masks).items()}


PLUGINS = {
    _Raises: "failed in score(): RuntimeError: plugin exploded",
    _ReturnsNone: "returned a NoneType, not a dict",
    _ReturnsList: "returned a list, not a dict",
    _ReturnsNumpy: "returned a ndarray for",
    _IntegerScores: "returned torch.int64 scores",
    _ChangesWeights: "changed the model it scored",
    _ChangesMode: "changed the model it scored",
}


@pytest.fixture
def plugins():
    for plugin in PLUGINS:
        register_scorer(plugin)
    yield
    for plugin in PLUGINS:
        unregister_scorer(plugin.name)


@pytest.mark.parametrize("plugin", PLUGINS, ids=lambda p: p.name)
def test_a_misbehaving_plugin_is_named_with_its_package(plugin, plugins):
    with pytest.raises(PaiError) as caught:
        pai.prune(toy_mlp(), plugin.name, 4)
    message = str(caught.value)
    assert message.startswith(f"scorer {plugin.name!r} (from in-process)")
    assert PLUGINS[plugin] in message and "\n" not in message


def test_integer_scores_are_refused_saying_what_ties_mean(plugins):
    with pytest.raises(PaiError, match="ties break by position, so return float64"):
        pai.prune(toy_mlp(), _IntegerScores.name, 4)


@pytest.mark.parametrize("debug", ["flag", "environment"])
def test_debug_shows_the_traceback_after_the_one_line(
    debug, plugins, tmp_path, capsys, monkeypatch
):
    argv = ["prune", *SMALL, "--scorer", _Raises.name, "--compression", "4"]
    argv += ["--out", tmp_path / "masks.pt"]
    plain = cli(argv, capsys)
    assert_refused(plain, f"scorer {_Raises.name!r} (from in-process)", "plugin exploded")

    if debug == "flag":
        argv.append("--debug")
    else:
        monkeypatch.setenv("PAI_DEBUG", "1")
    shown = cli(argv, capsys)

    assert shown.code == 2 and shown.first == plain.first
    assert "Traceback" in shown.err and "RuntimeError: plugin exploded" in shown.err
    assert not (tmp_path / "masks.pt").exists()


# --- masks in plain PyTorch form, and reproducible files ------------------------------------


def test_a_plain_mask_dict_works_wherever_masks_are_taken(tmp_path):
    model = build_model("lenet300", "mnist", seed=0)
    masks = pai.prune(model, "magnitude", 30)
    masks.save(tmp_path / "masks.pt")
    plain = torch.load(tmp_path / "masks.pt", weights_only=True)
    assert type(plain) is dict

    assert pai.effective_masks(model, plain) == pai.effective_masks(model, masks)
    assert pai.layer_collapse(plain) == pai.layer_collapse(masks) == []
    assert pai.prune(model, "magnitude", 60, masks=plain) == pai.prune(model, "magnitude", 60,
                                                                         masks=masks)  # fmt: skip
    shuffled = pai.shuffle_within_layers(plain, torch.Generator().manual_seed(0))
    assert shuffled.layer_kept() == masks.layer_kept()


@pytest.mark.parametrize(
    "value, words",
    [
        ([torch.ones(3, dtype=torch.bool)], ["masks must map", "list"]),
        ({"fc.weight": [True, False]}, ["'fc.weight'", "list"]),
        ({"fc.weight": torch.ones(3)}, ["'fc.weight'", "torch.bool"]),
    ],
)
def test_anything_else_as_masks_is_one_line(value, words):
    with pytest.raises(PaiError) as caught:
        pai.layer_collapse(value)
    assert all(word in str(caught.value) for word in words) and "\n" not in str(caught.value)


def test_identical_runs_write_identical_tensor_files(tmp_path, data_root, capsys):
    state = {"w": torch.arange(6.0).reshape(2, 3), "m": torch.ones(4, dtype=torch.bool)}
    atomic_torch_save(state, tmp_path / "a.pt")
    atomic_torch_save(state, tmp_path / "elsewhere" / "b.pt")
    assert (tmp_path / "a.pt").read_bytes() == (tmp_path / "elsewhere" / "b.pt").read_bytes()

    for name in ("one", "two"):
        argv = ["train", *SMALL, *BUDGET, "--data-root", data_root, "--out", tmp_path / name]
        assert cli(argv, capsys).code == 0
    (first,) = [p for p in (tmp_path / "one").iterdir() if p.is_dir()]
    (second,) = [p for p in (tmp_path / "two").iterdir() if p.is_dir()]
    for file in ("masks.pt", "start.pt", "final.pt"):
        assert (first / file).read_bytes() == (second / file).read_bytes(), file
