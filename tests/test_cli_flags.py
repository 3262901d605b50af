"""Flags generated from a config dataclass: every field a flag, and the values read back."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from typing import Literal

import pytest

from pai.cli import _OneLineParser, build_parser
from pai.cli.flags import add_dataclass_flags, dataclass_values
from pai.cli.train import training_config
from pai.core.errors import PaiError
from pai.core.steps import Step
from pai.training.config import TrainConfig


@dataclass(frozen=True)
class Knobs:
    rate: float = field(default=0.2, metadata={"help": "fraction pruned", "aliases": ("--r",)})
    levels: int = 3
    name: str = field(default="a", metadata={"choices": ("a", "b"), "metavar": "NAME"})
    mode: Literal["fast", "slow"] = "fast"
    nesterov: bool = False
    augment: bool | None = None
    max_epochs: int | None = None
    milestones: tuple[str, ...] = field(default=(), metadata={"parse": Step.canonical})
    weights: tuple[float, ...] = (1.0, 0.5)
    kinds: tuple[str, ...] = field(default=("x",), metadata={"choices": ("x", "y")})


def parser_for(cls: type = Knobs, **kwargs) -> argparse.ArgumentParser:
    parser = _OneLineParser(prog="t")
    add_dataclass_flags(parser, cls, **kwargs)
    return parser


def values(argv: list[str], cls: type = Knobs, **kwargs) -> dict:
    parser = parser_for(cls, **kwargs)
    args = parser.parse_args(argv)
    return dataclass_values(args, cls, prefix=kwargs.get("prefix", ""))


def test_no_flags_give_the_defaults():
    assert Knobs(**values([])) == Knobs()


def test_round_trip_of_every_field():
    argv = [
        "--rate", "0.5", "--levels", "7", "--name", "b", "--mode", "slow", "--nesterov",
        "--no-augment", "--max-epochs", "4", "--milestones", "80ep, 5,", "--weights", "2,3.5",
        "--kinds", "y,x",
    ]  # fmt: skip
    assert Knobs(**values(argv)) == Knobs(
        rate=0.5, levels=7, name="b", mode="slow", nesterov=True, augment=False, max_epochs=4,
        milestones=("80ep", "5it"), weights=(2.0, 3.5), kinds=("y", "x"),
    )  # fmt: skip


def test_bool_flags_are_on_off_switches_never_strings():
    assert values(["--nesterov"])["nesterov"] is True
    assert values(["--nesterov", "--no-nesterov"])["nesterov"] is False
    with pytest.raises(SystemExit):  # `type=bool` would read "False" as True
        values(["--nesterov", "False"])
    assert [values(a)["augment"] for a in ([], ["--augment"], ["--no-augment"])] == [
        None,
        True,
        False,
    ]


def test_optional_int_defaults_to_none_and_parses():
    assert values([])["max_epochs"] is None
    assert values(["--max-epochs", "12"])["max_epochs"] == 12


def test_tuples_are_comma_separated_lists_parsed_item_by_item():
    assert values(["--weights", "0.25"])["weights"] == (0.25,)
    assert values(["--weights", ""])["weights"] == ()
    assert values(["--milestones", "2ep,500"])["milestones"] == ("2ep", "500it")


def test_an_alias_sets_the_same_value():
    assert values(["--r", "0.75"])["rate"] == 0.75


def test_prefix_and_rename_spell_the_flag_and_values_keep_field_names():
    parser = parser_for(prefix="imp", rename={"levels": "depth"})
    args = parser.parse_args(["--imp-rate", "0.1", "--imp-depth", "5"])
    assert args.imp_rate == 0.1 and args.imp_levels == 5
    assert dataclass_values(args, Knobs, prefix="imp")["levels"] == 5
    with pytest.raises(SystemExit):
        parser.parse_args(["--rate", "0.1"])


def test_excluded_fields_have_no_flag_and_no_value():
    parser = parser_for(exclude=("rate", "levels"))
    args = parser.parse_args([])
    assert "rate" not in vars(args)
    assert set(dataclass_values(args, Knobs, exclude=("rate", "levels"))) == set(
        Knobs.__dataclass_fields__
    ) - {"rate", "levels"}


def test_help_shows_text_defaults_and_choices():
    text = " ".join(parser_for().format_help().split())
    assert "--rate RATE, --r RATE fraction pruned (default: 0.2)" in text
    assert "--nesterov, --no-nesterov (default: off)" in text
    assert "--mode {fast,slow} (default: fast)" in text
    assert "--name NAME (default: a)" in text
    assert "--weights WEIGHTS (default: 1.0,0.5)" in text
    assert "--augment, --no-augment\n" in parser_for().format_help()  # None: no default shown


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--levels", "three"], "argument --levels: 'three' is not a whole number"),
        (["--rate", "x"], "argument --rate/--r: 'x' is not a number"),
        (["--name", "c"], "argument --name: invalid choice: 'c'"),
        (["--kinds", "x,z"], "unknown value 'z'; choose from: x, y"),
        (["--milestones", "2ep,5x"], "bad step '5x'"),
    ],
)
def test_a_bad_value_is_one_line_and_exit_2(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_:
        values(argv)
    err = capsys.readouterr().err
    assert exit_.value.code == 2
    assert len(err.strip().splitlines()) == 1 and message in err


def test_a_field_without_default_is_required(capsys):
    @dataclass
    class Needs:
        width: int

    assert values(["--width", "3"], Needs) == {"width": 3}
    with pytest.raises(SystemExit):
        values([], Needs)
    assert "--width" in capsys.readouterr().err


def test_a_field_no_flag_can_hold_adds_no_flag():
    @dataclass
    class Odd:
        fine: int = 1
        pairs: tuple[int, int] = (1, 2)

    parser = _OneLineParser(prog="t")
    with pytest.raises(PaiError, match="'pairs'.*tuple"):
        add_dataclass_flags(parser, Odd)
    assert "--fine" not in parser.format_help()


def test_a_flag_taken_already_adds_no_flag():
    parser = _OneLineParser(prog="t")
    parser.add_argument("--r")
    with pytest.raises(PaiError, match="flag --r of Knobs is taken already"):
        add_dataclass_flags(parser, Knobs)
    assert "--levels" not in parser.format_help()


def test_bad_exclude_rename_or_class_name_what_is_wrong():
    with pytest.raises(PaiError, match="no field 'speed' to exclude"):
        parser_for(exclude=("speed",))
    with pytest.raises(PaiError, match="no field 'speed' to rename"):
        parser_for(rename={"speed": "pace"})
    with pytest.raises(PaiError, match="not a dataclass"):
        parser_for(int)


def test_training_flags_are_the_fields_of_train_config():
    base = ["train", "--model", "lenet300", "--dataset", "mnist", "--out", "x"]
    parser = build_parser()
    assert training_config(parser.parse_args([*base, "--steps", "5"])) == TrainConfig("5it")
    argv = [
        *base, "--epochs", "3", "--optimizer", "adam", "--lr", "0.001", "--momentum", "0",
        "--nesterov", "--weight-decay", "1e-4", "--batch-size", "64", "--lr-schedule", "step",
        "--milestones", "80ep,120ep", "--gamma", "0.2", "--warmup", "500it", "--eval-every",
        "2ep", "--no-augment", "--seed", "4",
    ]  # fmt: skip
    assert training_config(parser.parse_args(argv)) == TrainConfig(
        budget="3ep", batch_size=64, optimizer="adam", lr=0.001, momentum=0.0, nesterov=True,
        weight_decay=1e-4, lr_schedule="step", milestones=("80ep", "120ep"), gamma=0.2,
        warmup="500it", eval_every="2ep", augment=False, seed=4,
    )  # fmt: skip
