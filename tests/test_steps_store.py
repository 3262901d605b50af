"""Step strings and the run store's identity and atomicity."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import pytest

from pai.core.errors import PaiError
from pai.core.steps import Step
from pai.core.store import Run, canonical, config_hash
from pai.training.config import TrainConfig


def test_step_parses_units():
    assert Step.parse("500it").iterations(100) == 500
    assert Step.parse("2ep").iterations(469) == 938
    assert Step.parse(7) == Step(7, "it")
    assert str(Step.parse(" 3ep ")) == "3ep"


def test_canonical_reads_a_bare_count_as_iterations():
    assert Step.canonical("0") == "0it"
    assert Step.canonical(" 500 ") == "500it"
    assert Step.canonical("2ep") == "2ep"
    with pytest.raises(PaiError, match="'500it' or '2ep'"):
        Step.canonical("2 epochs")


@pytest.mark.parametrize("bad", ["", "5", "ep", "1.5ep", "-2it", "3 epochs"])
def test_step_rejects_bad_text(bad):
    with pytest.raises(PaiError, match="'500it' or '2ep'"):
        Step.parse(bad)


def test_known_hash_is_pinned():
    # Changing this hash orphans every stored run: only do it on purpose.
    text = (
        '{"batch_size":128,"budget":"2ep","eval_every":"1ep","gamma":0.1,"lr":0.1,'
        '"lr_schedule":"cosine","milestones":[],"momentum":0.9,"nesterov":false,'
        '"optimizer":"sgd","seed":0,"warmup":"0it","weight_decay":0.0}'
    )
    assert json.dumps(canonical(TrainConfig()), sort_keys=True, separators=(",", ":")) == text
    assert config_hash(TrainConfig()) == hashlib.sha256(text.encode()).hexdigest()[:12]
    assert config_hash(TrainConfig()) == "ec4f647984f5"


def test_none_fields_are_left_out_of_the_identity():
    @dataclass(frozen=True)
    class Old:
        a: int = 1

    @dataclass(frozen=True)
    class New:
        a: int = 1
        b: str | None = None

    assert canonical(New()) == {"a": 1}
    assert config_hash(Old()) == config_hash(New())
    assert config_hash(New(b="x")) != config_hash(Old())


def test_bad_training_config_names_the_value():
    with pytest.raises(PaiError, match="'rmsprop'"):
        TrainConfig(optimizer="rmsprop")
    with pytest.raises(PaiError, match="lr must be"):
        TrainConfig(lr=-1.0)
    with pytest.raises(PaiError, match="'3'"):
        TrainConfig(budget="3")


def test_run_is_complete_only_after_finish_and_restart_clears(tmp_path):
    run = Run(tmp_path, "train", TrainConfig())
    assert run.path.name == f"train-{run.hash}"
    run.start()
    run.write_json("metrics.json", {"x": 1})
    assert not run.complete
    again = Run(tmp_path, "train", TrainConfig())
    again.start()
    assert not (again.path / "metrics.json").exists()
    assert again.read_json("config.json")["kind"] == "train"
    again.finish()
    assert Run(tmp_path, "train", TrainConfig()).complete


def test_atomic_writes_get_ordinary_permissions(tmp_path):
    import os

    from pai.core.atomic import atomic_write_text

    path = atomic_write_text(tmp_path / "x.txt", "hello")
    mask = os.umask(0)
    os.umask(mask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~mask
    assert path.read_text() == "hello"
