"""No number changes: today's code names the runs of every committed comparison as they were named.

A run directory is `<method>-<variant>-<hash of its RunSpec>`, so a change of a config's fields,
defaults or canonical form silently orphans every stored run and makes the committed tables
unreproducible. Each committed `runs.csv` is checked against the runs its command plans now (the
preset that reproduces it and the command in its PROVENANCE.md), through the real CLI parser;
planning trains nothing. A few hand-written configs pin their hashes as literals besides
(`TrainConfig()` and the default `ImpConfig` are pinned in test_steps_store.py and test_imp.py).
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
import shlex
from pathlib import Path

import pytest

from pai import ImpConfig, TrainConfig
from pai.cli import build_parser
from pai.cli.compare import compare_config
from pai.core.store import canonical, config_hash
from pai.experiments.compare import RunSpec, plan_runs, run_for
from pai.experiments.presets import load_preset
from pai.training.stored import TrainRunConfig

ROOT = Path(__file__).parents[1]
RUN_TABLES = sorted((ROOT / "results").rglob("runs.csv"))
PROVENANCE_COMMAND = re.compile(r"^- command: `(.+)`$", re.MULTILINE)


def _out(argv: list[str]) -> Path | None:
    """The --out folder of a `pai compare` argument list, resolved against the checkout."""
    if argv[:1] != ["compare"] or "--out" not in argv:
        return None
    return (ROOT / argv[argv.index("--out") + 1]).resolve()


def _commands() -> dict[Path, list[tuple[str, list[str]]]]:
    """For each result folder: (where the command is written, its `pai` argument list)."""
    found: dict[Path, list[tuple[str, list[str]]]] = {}
    for preset_path in sorted((ROOT / "benchmarks" / "presets").glob("*.toml")):
        for run in load_preset(preset_path).runs:
            argv = run.argv()
            if _out(argv) is not None:
                found.setdefault(_out(argv), []).append((f"preset {preset_path.name}", argv))
    for table in RUN_TABLES:
        provenance = table.parent / "PROVENANCE.md"
        match = PROVENANCE_COMMAND.search(provenance.read_text()) if provenance.exists() else None
        if match:
            words = shlex.split(match.group(1))  # e.g. OMP_NUM_THREADS=1 nice -n 10 pai compare
            argv = words[words.index("pai") + 1 :] if "pai" in words else []
            if _out(argv) == table.parent.resolve():
                found.setdefault(table.parent.resolve(), []).append(("PROVENANCE.md", argv))
    return found


COMMANDS = _commands()
CASES = [
    pytest.param(
        table, argv, id=f"{table.parent.relative_to(ROOT / 'results').as_posix()} ({source})"
    )
    for table in RUN_TABLES
    for source, argv in COMMANDS.get(table.parent.resolve(), [])
]


def _committed_run_dirs(table: Path) -> set[str]:
    with table.open(newline="") as file:
        rows = list(csv.DictReader(file))
    assert rows and all(row["run_dir"] for row in rows), f"{table} has no run_dir column"
    names = [row["run_dir"] for row in rows]
    assert len(set(names)) == len(names), f"{table} names a run directory twice"
    return set(names)


def test_every_committed_comparison_names_the_command_that_made_it():
    assert RUN_TABLES, "no committed runs.csv found under results/"
    missing = [str(t.relative_to(ROOT)) for t in RUN_TABLES if t.parent.resolve() not in COMMANDS]
    assert missing == [], "neither a preset nor PROVENANCE.md gives their command"


@pytest.mark.parametrize(("table", "argv"), CASES)
def test_todays_plan_names_the_committed_runs(table, argv):
    args = build_parser().parse_args(argv)
    store = args.store if args.store is not None else Path(args.out) / "runs"
    planned = [run_for(spec, store).path.name for spec in plan_runs(compare_config(args))]
    assert len(set(planned)) == len(planned)
    committed = _committed_run_dirs(table)
    assert set(planned) - committed == set(), "planned now, not in the committed runs.csv"
    assert committed - set(planned) == set(), "committed, no longer planned: a hash changed"


# --- literal hashes of hand-written configs -----------------------------------------------------


def test_a_training_config_with_every_kind_of_field_pins_its_canonical_text():
    # strings, ints, floats (1e-4 as 0.0001), a tuple (as a list), booleans, a set optional field
    config = TrainConfig(
        budget="160ep",
        lr_schedule="step",
        milestones=("80ep", "120ep"),
        weight_decay=1e-4,
        augment=True,
        seed=2,
    )
    text = (
        '{"augment":true,"batch_size":128,"budget":"160ep","eval_every":"1ep","gamma":0.1,'
        '"lr":0.1,"lr_schedule":"step","milestones":["80ep","120ep"],"momentum":0.9,'
        '"nesterov":false,"optimizer":"sgd","seed":2,"warmup":"0it","weight_decay":0.0001}'
    )
    assert json.dumps(canonical(config), sort_keys=True, separators=(",", ":")) == text
    assert config_hash(config) == hashlib.sha256(text.encode()).hexdigest()[:12]
    assert config_hash(config) == "81601359ac3a"


def test_an_imp_config_with_targets_and_a_resumed_schedule_pins_its_hash():
    config = ImpConfig(
        "lenet300",
        "mnist",
        TrainConfig(budget="8ep", batch_size=100),
        model_seed=1,
        levels=7,
        rate=0.5,
        rewind="500",
        rewind_schedule="resume",
        targets=(16, 4),
        train_per_class=500,
    )
    identity = config.identity()
    assert identity["targets"] == [4.0, 16.0] and identity["rewind"] == "500it"
    assert config_hash(identity) == "4bb63db7d149"


def test_a_comparison_run_pins_its_directory_name():
    # None fields (train_per_class) are left out; options is a mapping inside the identity
    spec = RunSpec(
        "snip", "original", 10.0, 0, "lenet300", "mnist", TrainConfig(), scope="global",
        per_class=10, options={"rounds": 1},
    )  # fmt: skip
    text = json.dumps(canonical(spec), sort_keys=True, separators=(",", ":"))
    assert text.startswith('{"compression":10.0,"dataset":"mnist","method":"snip"')
    assert '"options":{"rounds":1},"per_class":10,"scope":"global","seed":0,' in text
    assert "train_per_class" not in text
    assert run_for(spec, "store").path.name == "snip-original-b298e3e445ea"
    dense = RunSpec("dense", "original", 1.0, 3, "lenet300", "mnist", TrainConfig(seed=3))
    assert run_for(dense, "store").path.name == "dense-original-e60f208efd43"


def test_a_training_run_pins_its_hash():
    assert config_hash(TrainRunConfig("lenet300", "mnist", 0, TrainConfig())) == "c74ae0ef9ce4"
