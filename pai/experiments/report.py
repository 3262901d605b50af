"""Reports rebuilt from a run store alone: what a sweep wrote, written again, training nothing.

`report(path)` reads what `path` holds. A comparison (an output folder with its `runs/`
store, or a store itself): every `<method>-<variant>-<hash>` run directory is read back and
checked (`COMPARE_CONTENTS`), and `runs.csv`, `summary.csv`, `summary.md` and
`accuracy_vs_compression.png` are rebuilt from the rows of the sound complete runs, whoever
trained them; the runs keep the order of the `runs.csv` found there (the sweep's plan order),
and runs it does not list follow by seed, method, compression and variant. IMP runs (an
`imp-<hash>/` folder or a folder of them): `levels.csv` of each, from its complete levels
(`read_imp`). A collapse folder: its tables and figures, from the rows and figure data it
stored (`pai.experiments.collapse.read_outputs`). Damaged runs (files that do not read back, a
row without its columns) and unfinished ones are counted and listed, never moved: the store
is only read.

A store shared by sweeps of different trainings (model, dataset, training config, training
subset) holds several settings; their runs are never averaged together, and `setting` picks one.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from pai.core.atomic import atomic_write_text
from pai.core.errors import PaiError
from pai.core.store import FILES, QUARANTINE, Run, config_hash, file_problem
from pai.experiments.collapse import CONFIG_FILE, read_outputs, write_outputs
from pai.experiments.compare.record import COMPARE_CONTENTS, runs_table
from pai.report.schema import DENSE, NOISE, ORIGINAL, VARIANTS
from pai.report.tables import GROUP, write_summary
from pai.search.imp import LEVEL_CONTENTS, ImpResult, read_imp

# A comparison run is `<method>-<variant>-<hash>`, the variant `original` or one of schema's.
_NAMED = "|".join(map(re.escape, (ORIGINAL, *VARIANTS[:-1])))
COMPARE_RUN = re.compile(rf"^.+-(?:{_NAMED}|{NOISE}:[^-/]+)-[0-9a-f]{{12}}$")
IMP_ROOT = re.compile(r"^imp-[0-9a-f]{12}$")
LEVEL_RUN = re.compile(r"^level-\d{2,}(?:-[a-z]+)?$")
# The fields of a comparison run's config that make runs comparable (the rest is the run).
SETTING: tuple[str, ...] = ("model", "dataset", "train", "train_per_class")


@dataclass
class StoreReport:
    """What a report found and wrote.

    `found` counts run directories; `complete` the sound complete ones the tables hold;
    `incomplete` and `damaged` (with the reason) list the others; `set_aside` the runs an
    earlier command moved aside as damaged (`<name>.damaged-<n>`). `tables` holds what was
    rebuilt (a comparison: `runs` and `summary`; IMP: the levels of each run, by folder name;
    collapse: `summary` and `collapse`); `settings` the settings a comparison store holds.
    """

    kind: str
    out: Path
    found: int = 0
    complete: int = 0
    incomplete: list[Path] = field(default_factory=list)
    damaged: list[tuple[Path, str]] = field(default_factory=list)
    set_aside: list[Path] = field(default_factory=list)
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    written: list[Path] = field(default_factory=list)
    settings: dict[str, str] = field(default_factory=dict)

    def lines(self) -> list[str]:
        """The report in a few lines: the counts, then one line per damaged run."""
        head = (
            f"{self.out}: {self.found} runs found, {self.complete} complete, "
            f"{len(self.incomplete)} incomplete, {len(self.damaged)} damaged"
        )
        if self.set_aside:
            head += f", {len(self.set_aside)} set aside earlier as damaged"
        return [head, *(f"damaged: {path}: {why}" for path, why in self.damaged)]


def report(path: str | Path, *, setting: str | None = None) -> StoreReport:
    """Rebuild the tables and figures of the comparison or IMP runs stored under `path`."""
    path = Path(path)
    if not path.is_dir():
        why = "does not exist" if not path.exists() else "is not a folder"
        raise PaiError(f"{str(path)!r} {why}; give a comparison's or IMP run's output folder")
    if (path / "runs").is_dir():
        return report_comparison(path / "runs", path, setting=setting)
    if (path / CONFIG_FILE).is_file() or (path / "collapse.csv").is_file():
        if setting is not None:
            raise PaiError("setting applies to comparisons; a collapse folder has one config")
        return report_collapse(path)
    children = sorted(path.iterdir())
    if any(COMPARE_RUN.match(child.name) for child in children):
        return report_comparison(path, path, setting=setting)
    roots = [path] if IMP_ROOT.match(path.name) else [c for c in children if IMP_ROOT.match(c.name)]
    if roots:
        if setting is not None:
            raise PaiError("setting applies to comparisons; IMP runs are reported one by one")
        return report_imp(roots, path)
    raise PaiError(
        f"{str(path)!r} holds no runs: expected a comparison's folder (with runs/), a store of "
        "<method>-<variant>-<hash> runs, or IMP runs (imp-<hash>/)"
    )


def _setting(config: dict[str, Any]) -> tuple[str, str]:
    """A run's setting: (its hash, a description). The training's seed is the run's own (its
    data order), not part of the setting."""
    train = {k: v for k, v in (config.get("train") or {}).items() if k != "seed"}
    values = {**{key: config.get(key) for key in SETTING}, "train": train}
    subset = config.get("train_per_class")
    text = f"{config.get('model')} on {config.get('dataset')}, {train.get('budget')} per ticket"
    return config_hash(values)[:8], text + (f", {subset} per class" if subset else "")


def _canonical_order(row: dict[str, Any]) -> tuple:
    """Seed, the dense run first, method, compression, variant: a sweep's plan order when
    methods are given alphabetically."""
    variant, order = row["variant"], (ORIGINAL, *VARIANTS)
    return (
        row["seed"],
        row["method"] != DENSE,
        row["method"],
        row["requested_compression"],
        order.index(variant) if variant in order else len(order),
        variant,
    )


def _listed_order(out: Path) -> dict[str, int]:
    """Run directory -> position in the `runs.csv` already in `out` (none when unreadable)."""
    try:
        listed = pd.read_csv(out / "runs.csv", usecols=["run_dir"])["run_dir"].tolist()
    except (OSError, ValueError, KeyError):
        return {}
    return {name: index for index, name in enumerate(listed)}


def report_comparison(store: Path, out: Path, *, setting: str | None = None) -> StoreReport:
    """Rebuild `runs.csv`, the summary and the figure in `out` from the runs in `store`."""
    from pai.report.plots import plot_accuracy_vs_compression

    result = StoreReport("compare", out)
    result.set_aside = sorted(p for p in store.iterdir() if QUARANTINE in p.name)
    rows: dict[str, list[dict[str, Any]]] = {}
    for path in sorted(p for p in store.iterdir() if COMPARE_RUN.match(p.name)):
        result.found += 1
        run = Run.at(path)
        problem = run.damage(COMPARE_CONTENTS)
        if problem is not None:
            result.damaged.append((path, problem))
        elif not run.complete:
            result.incomplete.append(path)
        else:
            key, text = _setting(run.read_json(FILES.config))
            result.settings[key] = text
            rows.setdefault(key, []).append(run.read_json(FILES.row))
    chosen = _choose_setting(result.settings, setting, store)
    if chosen is None:
        return result  # no complete run: nothing to tabulate
    listed = _listed_order(out)
    kept = sorted(
        rows[chosen],
        key=lambda row: (listed.get(row.get("run_dir"), len(listed)), _canonical_order(row)),
    )
    result.complete = len(kept)
    table = runs_table(kept)
    _check_one_run_each(table)
    atomic_write_text(out / "runs.csv", table.to_csv(index=False))
    summary, _ = write_summary(table, out)
    figure = plot_accuracy_vs_compression(
        table, out / "accuracy_vs_compression.png", title=result.settings[chosen]
    )
    result.tables = {"runs": table, "summary": summary}
    names = ("runs.csv", "summary.csv", "summary.md")
    result.written = [*(out / name for name in names), Path(figure)]
    return result


def _choose_setting(settings: dict[str, str], setting: str | None, store: Path) -> str | None:
    """The setting to tabulate: the only one, or `setting`; PaiError when that is ambiguous."""
    listing = "; ".join(f"{key}: {text}" for key, text in settings.items())
    if setting is not None:
        if setting not in settings:
            raise PaiError(f"setting {setting!r} is not among those in {store}: {listing}")
        return setting
    if len(settings) > 1:
        raise PaiError(
            f"{store} holds runs of {len(settings)} settings, never averaged together "
            f"({listing}); choose one with setting (--setting)"
        )
    return next(iter(settings), None)


def _check_one_run_each(table: pd.DataFrame) -> None:
    """PaiError when two runs share a method, variant, compression and seed (sweeps with
    different method options in one store), which a summary would count as two seeds."""
    keys = [*GROUP, "seed"]
    twice = table[table.duplicated(keys, keep=False)]
    if not twice.empty:
        first = twice.iloc[0]
        same = twice[(twice[keys] == first[keys]).all(axis=1)]["run_dir"].tolist()
        raise PaiError(
            f"runs {', '.join(same)} are the same method, variant, compression and seed with "
            "different options; report them from separate stores"
        )


def report_imp(roots: Sequence[Path], out: Path) -> StoreReport:
    """Rebuild `levels.csv` of every IMP run in `roots` from its complete levels."""
    result = StoreReport("imp", out)
    for root in roots:
        levels = [p for p in sorted(root.iterdir()) if LEVEL_RUN.match(p.name)]
        result.set_aside += sorted(p for p in root.iterdir() if QUARANTINE in p.name)
        for path in levels:
            result.found += 1
            run = Run.at(path)
            problem = run.damage(LEVEL_CONTENTS)
            if problem is not None:
                result.damaged.append((path, problem))
            elif not run.complete:
                result.incomplete.append(path)
            else:
                result.complete += 1
        imp: ImpResult = read_imp(root)
        rewind = file_problem(root / FILES.rewind)
        if imp.config.reset == "rewind" and imp.levels and rewind is not None:
            result.damaged.append((root / FILES.rewind, rewind))  # level 0 must be trained again
        result.tables[root.name] = imp.table()
        result.written.append(imp.write_csv())
    return result


def report_collapse(out: Path) -> StoreReport:
    """Rebuild collapse.md, the tables and both figures of a `pai collapse` folder from the
    rows and figure data it stored (`read_outputs`); one "run" per scorer and seed."""
    config, record, seeds_done = read_outputs(out)
    result = StoreReport("collapse", out)
    result.found = result.complete = len(record.results)
    result.tables["summary"] = write_outputs(config, record, seeds_done, out)
    result.tables["collapse"] = pd.DataFrame(record.results)
    return result
