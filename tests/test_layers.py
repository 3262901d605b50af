"""The layering of pai: no import cycles, no import against the layers (benchmarks/structure_facts.py)."""

from __future__ import annotations

import importlib.util
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]


def _load_structure_facts():
    path = ROOT / "benchmarks" / "structure_facts.py"
    spec = importlib.util.spec_from_file_location("structure_facts", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


sf = _load_structure_facts()


@pytest.fixture(scope="module")
def facts():
    return sf.analyze(ROOT)


def test_pai_and_scorers_have_no_import_cycle(facts):
    assert facts.modules and facts.imports
    assert facts.cycles == [], "\n".join(" -> ".join(cycle) for cycle in facts.cycles)


def test_pai_and_scorers_import_only_down_the_layers(facts):
    found = [f"{v.edge.path}:{v.edge.line} -> {v.edge.target} [{v.rule}]" for v in facts.violations]
    assert found == [], "\n".join(found)


# --- the analysis itself, on a package small enough to know every answer ----------------------

SYNTHETIC = {
    "pai/__init__.py": "import importlib\nimport pai.cli.main\n",
    "pai/core/__init__.py": '"""core"""\n',
    # a <-> b: b imports a at the top (relatively), a imports b inside a decorated function
    "pai/core/a.py": """\
        import functools


        @functools.cache
        def lazy():
            from pai.core import b

            return b
        """,
    "pai/core/b.py": "from . import a\nimport os\n",
    # upward inside a method; a relative import two levels up that is allowed
    "pai/report/__init__.py": "",
    "pai/report/t.py": """\
        from ..core.a import lazy


        class Table:
            def render(self):
                import pai.experiments.x

                def inner():
                    return 1

                return inner
        """,
    "pai/data/d.py": "from pai.report import t\n",  # across: data and report share rank 1
    "pai/experiments/x.py": "from ..report import t\nimport importlib\n",
    "pai/cli/main.py": "import importlib\nimportlib.import_module('pai.experiments.x')\n",
    "pai/pruning/m.py": "import scorers.p\n",  # pai never imports a plugin
    "pai/training/h.py": "from pai.testing import helper\n",  # tests only
    "pai/testing/__init__.py": "from pai.training import h\n",  # same rank, allowed
    "pai/testing/helper.py": "",
    "pai/cli/bad.py": "from pai import something\n",  # the top package re-exports everything
    "scorers/__init__.py": "",
    "scorers/p.py": "from pai.pruning import m\nfrom pai.cli import main\nfrom pai import x\n",
}


def _write_package(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return root


def test_the_analysis_finds_cycles_lazy_upward_and_relative_imports(tmp_path):
    facts = sf.analyze(_write_package(tmp_path, SYNTHETIC))
    edges = {(i.source, i.line, i.target) for i in facts.imports}
    assert ("pai.core.b", 1, "pai.core.a") in edges  # `from . import a`
    assert ("pai.core.a", 6, "pai.core.b") in edges  # inside a function
    assert ("pai.report.t", 1, "pai.core.a") in edges  # `from ..core.a import lazy`
    assert ("pai.experiments.x", 1, "pai.report.t") in edges
    assert ("pai.cli.main", 2, "pai.experiments.x") in edges  # import_module("literal")
    assert not any(i.target in {"os", "functools", "importlib"} for i in facts.imports)
    assert facts.cycles == [
        ["pai.core.a", "pai.core.b", "pai.core.a"],  # through a function-level import
        ["pai.experiments.x", "pai.report.t", "pai.experiments.x"],  # through a method's
        ["pai.pruning.m", "scorers.p", "pai.pruning.m"],
    ]  # not pai.testing -> pai.training.h: h imports the module pai.testing.helper
    wrong = {(v.edge.path, v.edge.line, v.edge.target) for v in facts.violations}
    assert wrong == {
        ("pai/report/t.py", 6, "pai.experiments.x"),  # upward, inside a method
        ("pai/data/d.py", 1, "pai.report.t"),  # across a rank
        ("pai/pruning/m.py", 1, "scorers.p"),
        ("pai/training/h.py", 1, "pai.testing.helper"),
        ("pai/cli/bad.py", 1, "pai"),
        ("scorers/p.py", 2, "pai.cli.main"),
    }
    assert sf.main(["--check", "--root", str(tmp_path)]) == 1


def test_a_clean_package_passes_the_check(tmp_path, capsys):
    files = {name: SYNTHETIC[name] for name in ("pai/__init__.py", "pai/cli/main.py")}
    files["pai/experiments/x.py"] = "from pai.core import errors\n"
    files["pai/core/errors.py"] = ""
    facts = sf.analyze(_write_package(tmp_path, files))
    assert facts.cycles == [] and facts.violations == []
    assert sf.main(["--check", "--root", str(tmp_path)]) == 0
    assert "import cycles: 0\nwrong-way imports: 0\n" in capsys.readouterr().out


def test_function_lengths_exclude_decorators_and_name_methods(tmp_path):
    facts = sf.analyze(_write_package(tmp_path, SYNTHETIC))
    lengths = {(f.path, f.qualname): (f.line, f.length) for f in facts.functions}
    assert lengths[("pai/core/a.py", "lazy")] == (5, 4)  # def on line 5, decorator on 4
    assert lengths[("pai/report/t.py", "Table.render")] == (5, 7)
    assert lengths[("pai/report/t.py", "Table.render.inner")] == (8, 2)
    assert [f.length for f in facts.functions] == sorted(
        (f.length for f in facts.functions), reverse=True
    )
    assert facts.modules["pai.report.t"] == ("pai/report/t.py", 11)


def test_cycles_are_the_elementary_cycles_each_once():
    graph = {"a": {"b"}, "b": {"a", "c"}, "c": {"a", "d"}, "d": set(), "e": {"e"}}
    assert sf.import_cycles(graph) == [["a", "b", "a"], ["a", "b", "c", "a"]]
    assert sf.import_cycles({"a": {"b", "c"}, "b": {"c"}, "c": set()}) == []


@pytest.mark.parametrize(
    ("source", "target", "allowed"),
    [
        ("pai.cli.compare", "pai.core.store", True),
        ("pai.report.plots", "pai.report.schema", True),
        ("pai.models", "pai.data.specs", True),
        ("pai.data.loading", "pai.models", False),
        ("pai.report.tables", "pai.data.specs", False),
        ("pai.testing", "pai.training.loop", True),
        ("pai.training.loop", "pai.testing", False),
        ("pai.search.imp", "pai.testing", False),
        ("pai", "pai.cli", True),
        ("pai.__main__", "pai.cli", True),
        ("pai.core.errors", "pai", False),
        ("scorers.snip", "pai.training.loop", True),
        ("scorers.snip", "pai", True),
        ("scorers.snip", "pai.experiments.compare", False),
        ("pai.pruning.registry", "scorers.snip", False),
        ("pai.unplaced", "pai.core.errors", False),
        ("pai.core.errors", "pai.unplaced", False),
    ],
)
def test_the_rules(source, target, allowed):
    assert (sf.wrong_way(source, target) is None) == allowed
