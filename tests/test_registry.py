"""The scorer registry: entry-point discovery, in-process registration, broken plugins, CLI."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
import torch

import pai
from pai.cli import main
from pai.core.errors import PaiError
from pai.core.plugins import SCORERS, declared_names
from pai.pruning.masks import Masks, keep_topk
from pai.pruning.registry import (
    Scorer,
    get_scorer,
    register_scorer,
    rescan_scorers,
    scorer_entries,
    unregister_scorer,
)

BUILT_INS = {"random", "magnitude", "snip", "grasp", "synflow"}

PLUGIN_MODULE = '''
from pai.pruning.registry import Scorer


class SignedScorer(Scorer):
    """Keeps the most positive weights: distinguishable from every built-in."""

    name = "myscorer"
    needs_data = False
    default_rounds = 1
    description = "the signed weight"

    def score(self, model, masks, context):
        return {name: w.detach().clone() for name, w in self.weights(model, masks).items()}
'''


@pytest.fixture
def plugin(tmp_path, monkeypatch):
    """A throwaway distribution `myplug` on sys.path with a working and a broken scorer."""
    dist_info = tmp_path / "myplug-0.1.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: myplug\nVersion: 0.1\n")
    (dist_info / "entry_points.txt").write_text(
        "[pai.scorers]\n"
        "myscorer = myplug_scorer:SignedScorer\n"
        "mybroken = myplug_broken:BrokenScorer\n"
        "misnamed = myplug_scorer:SignedScorer\n"
    )
    (tmp_path / "myplug_scorer.py").write_text(PLUGIN_MODULE)
    (tmp_path / "myplug_broken.py").write_text("raise ImportError('broken on purpose')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    rescan_scorers()
    yield tmp_path
    monkeypatch.undo()
    for module in ("myplug_scorer", "myplug_broken"):
        sys.modules.pop(module, None)
    rescan_scorers()


def test_built_ins_are_found_through_the_entry_point_group():
    entries = {entry.name: entry for entry in scorer_entries()}
    assert set(pai.available_scorers()) >= BUILT_INS
    for name in BUILT_INS:
        assert entries[name].source == "pai"
        assert entries[name].scorer.name == name


def test_nothing_in_pai_imports_a_scorer_by_name():
    package = Path(pai.__file__).parent
    pattern = re.compile(r"^\s*(from|import)\s+scorers\b", re.MULTILINE)
    offenders = [p.name for p in package.rglob("*.py") if pattern.search(p.read_text())]
    assert offenders == []


def test_unknown_name_lists_registered_scorers():
    with pytest.raises(PaiError, match="unknown scorer 'nope'.*grasp, .*magnitude, .*random, snip"):
        get_scorer("nope")


def test_plugin_is_discovered_and_broken_ones_are_reported(plugin):
    entries = {entry.name: entry for entry in scorer_entries()}
    assert entries["myscorer"].source == "myplug"
    assert get_scorer("myscorer").description == "the signed weight"
    assert entries["mybroken"].scorer is None
    assert "ImportError: broken on purpose" in entries["mybroken"].error
    assert "loads a scorer named 'myscorer'" in entries["misnamed"].error
    assert "mybroken" not in pai.available_scorers()
    assert set(pai.available_scorers()) >= BUILT_INS  # a broken plugin breaks nothing else
    with pytest.raises(PaiError, match="'mybroken' .*failed to load.*broken on purpose"):
        get_scorer("mybroken")


def test_declared_names_list_every_plugin_without_loading_one(plugin, monkeypatch):
    """The names the command line checks against: broken plugins included, in-process ones
    too, and read again after a rescan."""
    names = declared_names(SCORERS)
    assert set(names) >= {"myscorer", "mybroken", "misnamed", *BUILT_INS}
    assert "myplug_broken" not in sys.modules  # nothing was imported to list them
    monkeypatch.undo()
    rescan_scorers()
    assert "myscorer" not in declared_names(SCORERS)


def test_discovery_is_cached_until_rescanned(plugin, monkeypatch):
    assert "myscorer" in pai.available_scorers()
    monkeypatch.undo()  # the plugin leaves sys.path, but the cached scan still has it
    assert "myscorer" in pai.available_scorers()
    rescan_scorers()
    assert "myscorer" not in pai.available_scorers()


def test_cli_lists_plugins_and_their_errors(plugin, capsys):
    assert main(["scorers"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"myscorer\s+no\s+1\s+myplug\s+the signed weight", out)
    assert re.search(r"mybroken .*myplug .*ImportError: broken on purpose", out)
    assert re.search(r"synflow\s+no\s+100\s+pai", out)
    assert re.search(r"snip\s+yes\s+1\s+pai", out)


def test_plugin_scorer_works_in_pai_prune(plugin, tmp_path, capsys):
    out = tmp_path / "masks.pt"
    argv = ["prune", "--model", "lenet300", "--dataset", "mnist", "--scorer", "myscorer"]
    assert (
        main([*argv, "--compression", "20", "--seed", "3", "--device", "cpu", "--out", str(out)])
        == 0
    )
    assert "total" in capsys.readouterr().out
    masks = Masks.load(out)
    model = pai.build_model("lenet300", "mnist", seed=3)
    weights = {name: w.detach() for name, w in pai.prunable_parameters(model).items()}
    assert masks == keep_topk(weights, 20)


class _Constant(Scorer):
    name = "constant-test"
    description = "every weight scores one"

    def score(self, model, masks, context):
        return {name: torch.ones(mask.shape) for name, mask in masks.items()}


def test_register_scorer_decorates_classes_and_takes_instances():
    try:
        assert register_scorer(_Constant) is _Constant
        assert isinstance(get_scorer("constant-test"), _Constant)
        assert "constant-test" in pai.available_scorers()
        source = {entry.name: entry.source for entry in scorer_entries()}["constant-test"]
        assert source == "in-process"
        assert "constant-test" in declared_names(SCORERS)
        instance = _Constant()
        register_scorer(instance)  # registering the name again replaces it
        assert get_scorer("constant-test") is instance
    finally:
        unregister_scorer("constant-test")
    assert "constant-test" not in pai.available_scorers()
    assert "constant-test" not in declared_names(SCORERS)


def test_register_scorer_rejects_objects_that_are_not_scorers():
    class NoRounds(_Constant):
        default_rounds = 0

    with pytest.raises(PaiError, match="default_rounds"):
        register_scorer(NoRounds)

    class DataFlagAsText(_Constant):
        needs_data = "no"

    with pytest.raises(PaiError, match="'needs_data' must be a bool"):
        register_scorer(DataFlagAsText)
    with pytest.raises(PaiError, match="'name' must be a str"):
        register_scorer(object())


def test_readme_example_plugin_is_short_and_works():
    readme = (Path(__file__).parents[1] / "scorers" / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", readme, re.DOTALL)
    example = next(block for block in blocks if "class GradientMagnitudeScorer" in block)
    assert len(example.strip().splitlines()) < 40
    namespace: dict = {}
    exec(compile(example, "pai_gradmag.py", "exec"), namespace)
    scorer = namespace["GradientMagnitudeScorer"]()
    net = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))
    x, y = torch.randn(9, 6, generator=torch.Generator().manual_seed(0)), torch.arange(9) % 3
    try:
        register_scorer(scorer)
        masks = pai.prune(net, "gradmag", 4, data=[(x, y)])
    finally:
        unregister_scorer("gradmag")
    net.zero_grad()
    torch.nn.functional.cross_entropy(net(x), y).backward()
    grads = {name: p.grad.abs() for name, p in pai.prunable_parameters(net).items()}
    assert masks == keep_topk(grads, 4)
