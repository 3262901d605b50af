"""`pai report`: a sweep's tables and figure rebuilt from its run store alone, training nothing."""

from __future__ import annotations

import contextlib
import io
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest

from pai.cli import main
from pai.report.tables import GROUP

SMALL = ["--model", "lenet300", "--dataset", "mnist", "--device", "cpu"]
BUDGET = ["--train-per-class", "10", "--batch-size", "20"]


def cli(argv, capsys) -> tuple[int, str, str]:
    capsys.readouterr()
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exit_:
        code = int(exit_.code)
    out, err = capsys.readouterr()
    return code, out, err


def _compare(out: Path, data_root: Path, *extra: str) -> list[str]:
    return ["compare", *SMALL, *BUDGET, "--data-root", data_root, "--out", out, *extra]


SWEEP = ["--steps", "5", "--methods", "random,magnitude", "--compressions", "4,16", "--seeds", "2"]


@pytest.fixture(scope="module")
def sweep(tmp_path_factory, data_root) -> tuple[Path, str]:
    """random and magnitude (not in alphabetical order) at 4x and 16x, two seeds: ten runs.
    Returns the output folder and the summary the sweep printed."""
    out = tmp_path_factory.mktemp("sweep") / "out"
    argv = [str(a) for a in _compare(out, data_root, *SWEEP)]
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main(argv) == 0
    return out, printed.getvalue()


@pytest.fixture
def stored(sweep, tmp_path) -> Path:
    out = tmp_path / "out"
    shutil.copytree(sweep[0], out)
    return out


def test_the_report_equals_the_tables_the_sweep_wrote(sweep, stored, capsys):
    original, printed = sweep
    for name in ("summary.csv", "summary.md", "accuracy_vs_compression.png"):
        (stored / name).unlink()

    code, out, err = cli(["report", stored], capsys)

    assert code == 0
    assert err.splitlines()[0] == f"{stored}: 10 runs found, 10 complete, 0 incomplete, 0 damaged"
    for name in ("runs.csv", "summary.csv", "summary.md"):
        assert (stored / name).read_bytes() == (original / name).read_bytes(), name
    assert (stored / "accuracy_vs_compression.png").stat().st_size > 0
    assert out == printed.split("tables and figure in")[0]  # the summary the sweep printed


def test_without_runs_csv_the_same_runs_and_summary_come_back(sweep, stored, capsys):
    original = sweep[0]
    (stored / "runs.csv").unlink()

    assert cli(["report", stored], capsys)[0] == 0

    def by_run(path: Path) -> pd.DataFrame:
        return pd.read_csv(path).sort_values("run_dir").reset_index(drop=True)

    pd.testing.assert_frame_equal(by_run(stored / "runs.csv"), by_run(original / "runs.csv"))
    rebuilt = pd.read_csv(stored / "summary.csv").sort_values(GROUP).reset_index(drop=True)
    reference = pd.read_csv(original / "summary.csv").sort_values(GROUP).reset_index(drop=True)
    pd.testing.assert_frame_equal(rebuilt, reference)


def test_a_corrupted_run_is_listed_and_the_report_goes_on(sweep, stored, capsys):
    runs = pd.read_csv(sweep[0] / "runs.csv")
    damaged = runs.query("method == 'magnitude' and seed == 1 and compression == 4")
    damaged = stored / "runs" / damaged["run_dir"].item()
    row = damaged / "row.json"
    row.write_text(row.read_text()[:40])
    unfinished = runs.query("method == 'random' and seed == 0 and requested_compression == 16")
    (stored / "runs" / unfinished["run_dir"].item() / "COMPLETE").unlink()

    code, _, err = cli(["report", stored], capsys)

    assert code == 0
    lines = err.splitlines()
    assert lines[0] == f"{stored}: 10 runs found, 8 complete, 1 incomplete, 1 damaged"
    assert lines[1].startswith(f"damaged: {damaged}: row.json does not read back")
    table = pd.read_csv(stored / "runs.csv")
    assert len(table) == 8 and damaged.name not in set(table["run_dir"])
    summary = pd.read_csv(stored / "summary.csv").set_index(["method", "requested_compression"])
    assert summary.loc[("magnitude", 4.0), "n"] == 1 and summary.loc[("random", 16.0), "n"] == 1
    assert summary.loc[("magnitude", 16.0), "n"] == 2
    assert row.exists() and not list((stored / "runs").glob("*.damaged-*"))  # only read


def test_latex_is_booktabs_with_the_best_of_each_compression_in_bold(sweep, stored, capsys):
    target = stored / "table.tex"

    assert cli(["report", stored, "--format", "latex", "--out", target], capsys)[0] == 0

    tex = target.read_text()
    assert all(rule in tex for rule in ("\\toprule", "\\midrule", "\\bottomrule"))
    assert "\\begin{tabular}{llrrr}" in tex  # method, variant, then 1x, 4x, 16x
    summary = pd.read_csv(stored / "summary.csv")
    rows = {line.split(" & ")[0]: line for line in tex.splitlines() if " & original & " in line}
    for compression, column in ((4.0, 3), (16.0, 4)):
        pruned = summary[(summary["requested_compression"] == compression)]
        best = pruned.loc[pruned["test_accuracy_mean"].idxmax()]
        ci = 100 * best["test_accuracy_ci95"]
        cell = f"\\textbf{{{100 * best['test_accuracy_mean']:.2f} $\\pm$ {ci:.2f}}}"
        assert rows[best["method"]].split(" & ")[column].removesuffix(" \\\\") == cell
        other = ({"random", "magnitude"} - {best["method"]}).pop()
        assert "textbf" not in rows[other].split(" & ")[column]
    assert "textbf" not in rows["dense"]


def test_by_chooses_the_keys_of_a_row(sweep, stored, capsys):
    default = cli(["report", stored], capsys)[1]
    assert cli(["report", stored, "--by", "method,compression"], capsys)[1] == default
    code, out, _ = cli(
        ["report", stored, "--by", "method,compression,seed", "--format", "csv"], capsys
    )
    assert code == 0 and len(pd.read_csv(pd.io.common.StringIO(out))) == 10

    code, _, err = cli(["report", stored, "--by", "compression"], capsys)

    assert code == 2 and len(err.strip().splitlines()) == 1  # the error, before the counts
    assert re.search(r"error: the runs differ in method \(.*\).*add method", err)


def test_csv_is_the_summary_table(sweep, stored, capsys):
    code, out, _ = cli(["report", stored, "--format", "csv"], capsys)
    assert code == 0 and out == (stored / "summary.csv").read_text()


def test_runs_of_another_training_in_the_store_are_never_averaged(sweep, stored, data_root, capsys):
    other = stored.parent / "other"
    extra = ["--steps", "6", "--methods", "magnitude", "--compressions", "4", "--store"]
    assert main([str(a) for a in _compare(other, data_root, *extra, stored / "runs")]) == 0

    code, _, err = cli(["report", stored], capsys)

    assert code == 2
    settings = dict(re.findall(r"([0-9a-f]{8}): lenet300 on mnist, (\d+it)", err))
    assert sorted(settings.values()) == ["5it", "6it"]
    five = next(key for key, budget in settings.items() if budget == "5it")
    code, _, err = cli(["report", stored, "--setting", five], capsys)
    assert code == 0 and "12 runs found, 10 complete" in err.splitlines()[0]
    assert (stored / "runs.csv").read_bytes() == (sweep[0] / "runs.csv").read_bytes()


def test_an_imp_run_is_reported_from_its_levels(tmp_path, data_root, capsys):
    out = tmp_path / "imp"
    argv = ["imp", *SMALL, *BUDGET, "--steps", "5", "--levels", "2", "--data-root", data_root]
    assert main([str(a) for a in [*argv, "--out", out]]) == 0
    (root,) = out.glob("imp-*")
    levels = (root / "levels.csv").read_text()
    (root / "levels.csv").unlink()

    code, printed, err = cli(["report", out], capsys)

    assert code == 0 and (root / "levels.csv").read_text() == levels
    assert err.splitlines()[0] == f"{out}: 3 runs found, 3 complete, 0 incomplete, 0 damaged"
    assert root.name in printed
    (root / "level-02" / "metrics.json").write_text("[]")
    code, _, err = cli(["report", root], capsys)
    assert code == 0 and "1 damaged" in err and "metrics.json holds a list" in err
    assert pd.read_csv(root / "levels.csv")["level"].tolist() == [0, 1]


@pytest.mark.parametrize("kind", ["missing", "empty"])
def test_a_folder_without_runs_is_one_line(kind, tmp_path, capsys):
    folder = tmp_path / "nothing"
    if kind == "empty":
        folder.mkdir()
    code, out, err = cli(["report", folder], capsys)
    why = "does not exist" if kind == "missing" else "holds no runs"
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1 and why in err


def test_a_collapse_folder_is_rebuilt_from_what_it_stored(tmp_path, capsys):
    out = tmp_path / "collapse"
    argv = ["collapse", *SMALL, "--scorers", "magnitude,random", "--seeds", "2"]
    assert main([str(a) for a in [*argv, "--compressions", "10,100", "--out", out]]) == 0
    names = ("collapse.csv", "collapse.md", "fixed_compressions.csv", "alive_layers.csv")
    written = {name: (out / name).read_bytes() for name in names}
    for name in ("collapse.md", "layer_density.png", "alive_layers.png"):
        (out / name).unlink()

    code, printed, err = cli(["report", out], capsys)

    assert code == 0 and err.splitlines()[0].endswith(
        "4 runs found, 4 complete, 0 incomplete, 0 damaged"
    )
    assert {name: (out / name).read_bytes() for name in names} == written
    assert (out / "layer_density.png").is_file() and (out / "alive_layers.png").is_file()
    assert "magnitude" in printed and "random" in printed
    (out / "collapse.json").unlink()  # a folder written before the figures' data was kept
    code, _, err = cli(["report", out], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "collapse.json is missing" in err
