"""Command-line flags generated from a config dataclass, and the field values read back.

A config's fields are its flags, so a new field is a new flag with no second list to edit
(open_lth's hparams do the same). Field `max_epochs` with prefix `earlybird` is the flag
`--earlybird-max-epochs`, stored in `args.earlybird_max_epochs`. Its type comes from the
annotation, its default from the field, and the rest from the field's `metadata`:

    rate: float = field(default=0.2, metadata={"help": "pruned per level", "aliases": ("--rate",)})

Metadata keys read (all optional): `help`, `choices`, `metavar`, `parse` (a function from the
flag's text to the value; for a tuple, from each item's text) and `aliases` (more option strings
for the same flag, e.g. an older spelling). Annotations understood: `bool` (`--x` / `--no-x`,
never `type=bool`, under which every string is true), `int`, `float`, `str`, `Literal[...]`
(its values are the choices), `X | None` (None is only ever the default) and `tuple[X, ...]`
(a comma-separated list, empty items dropped). Help shows every default other than None and ().
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from collections.abc import Callable, Collection, Mapping
from typing import Any

from pai.core.errors import PaiError

_SCALARS: tuple[type, ...] = (bool, int, float, str)
_NUMBERS = {int: "a whole number", float: "a number"}


@dataclasses.dataclass(frozen=True)
class _Shape:
    """What a field's annotation says about its flag: the item type, None allowed, a list."""

    item: type
    optional: bool = False
    sequence: bool = False
    choices: tuple[Any, ...] | None = None


def _shape(name: str, hint: Any) -> _Shape:
    """The `_Shape` of annotation `hint` of field `name`; PaiError for one no flag can hold."""
    optional = False
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        members = [member for member in typing.get_args(hint) if member is not type(None)]
        if len(members) != 1:
            raise PaiError(f"field {name!r} is a {hint}; a flag holds one type, or it and None")
        optional, hint = True, members[0]
    sequence = False
    if typing.get_origin(hint) is tuple:
        items = typing.get_args(hint)
        if len(items) != 2 or items[1] is not Ellipsis:
            raise PaiError(f"field {name!r} is a {hint}; lists are written tuple[X, ...]")
        sequence, hint = True, items[0]
    choices = None
    if typing.get_origin(hint) is typing.Literal:
        choices = typing.get_args(hint)
        hint = type(choices[0])
        if any(type(choice) is not hint for choice in choices):
            raise PaiError(f"field {name!r}: the values of a Literal must share one type")
    if hint not in _SCALARS or (hint is bool and (sequence or choices is not None)):
        raise PaiError(
            f"field {name!r} has type {hint}; flags hold bool, int, float, str, Literal, "
            "X | None and tuple[X, ...] of the non-bool ones"
        )
    return _Shape(hint, optional, sequence, choices)


def _item_parser(shape: _Shape, parse: Callable[[str], Any] | None) -> Callable[[str], Any]:
    """The function from one item's text to its value, failing with a one-line message."""

    def convert(text: str) -> Any:
        try:
            if parse is not None:
                value = parse(text)
            elif shape.item in _NUMBERS:
                value = shape.item(text)
            else:
                value = text
        except argparse.ArgumentTypeError:
            raise
        except (TypeError, ValueError) as error:  # PaiError included
            raise argparse.ArgumentTypeError(
                str(error) if parse is not None else f"{text!r} is not {_NUMBERS[shape.item]}"
            ) from None
        if shape.sequence and shape.choices is not None and value not in shape.choices:
            allowed = ", ".join(map(str, shape.choices))
            raise argparse.ArgumentTypeError(f"unknown value {text!r}; choose from: {allowed}")
        return value

    if not shape.sequence:
        return convert

    def convert_list(text: str) -> tuple[Any, ...]:
        return tuple(convert(item.strip()) for item in text.split(",") if item.strip())

    return convert_list


def _default_text(value: Any) -> str | None:
    """How help shows a default, or None when it shows none (None, an empty list)."""
    if value is None or value == ():
        return None
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, tuple):
        return ",".join(map(str, value))
    return str(value)


def _dest(prefix: str, name: str) -> str:
    return (prefix.replace("-", "_") + "_" if prefix else "") + name


def _init_fields(cls: type, exclude: Collection[str]) -> list[dataclasses.Field]:
    if not dataclasses.is_dataclass(cls):
        raise PaiError(f"{cls!r} is not a dataclass; flags are generated from a dataclass")
    unknown = sorted(set(exclude) - {f.name for f in dataclasses.fields(cls)})
    if unknown:
        raise PaiError(f"{cls.__name__} has no field {unknown[0]!r} to exclude")
    return [f for f in dataclasses.fields(cls) if f.init and f.name not in exclude]


@dataclasses.dataclass(frozen=True)
class _Flag:
    """One field's flag: its option strings, the keywords of `add_argument`, its help text."""

    option_strings: tuple[str, ...]
    options: dict[str, Any]
    help: str | None


def _flag(f: dataclasses.Field, hint: Any, name: str, dest: str) -> _Flag:
    """The flag `--<name>` of field `f` (annotation `hint`), stored under `dest`."""
    shape, meta = _shape(f.name, hint), f.metadata
    options: dict[str, Any] = {"dest": dest}
    if f.default is not dataclasses.MISSING:
        options["default"] = f.default
    elif f.default_factory is not dataclasses.MISSING:
        options["default"] = f.default_factory()
    else:
        options["required"] = True
    if shape.item is bool:
        options["action"] = argparse.BooleanOptionalAction
    else:
        if "choices" in meta:
            shape = dataclasses.replace(shape, choices=tuple(meta["choices"]))
        options["type"] = _item_parser(shape, meta.get("parse"))
        if shape.choices is not None and not shape.sequence:
            options["choices"] = shape.choices  # a list checks each item in its parser
        if "metavar" in meta or shape.choices is None:  # else argparse shows the choices
            options["metavar"] = meta.get("metavar", f.name.upper())
    default = _default_text(options.get("default"))
    words = [meta.get("help", ""), f"(default: {default})" if default is not None else ""]
    text = " ".join(word for word in words if word).replace("%", "%%")
    return _Flag((f"--{name}", *meta.get("aliases", ())), options, text or None)


def add_dataclass_flags(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup,
    cls: type,
    *,
    prefix: str = "",
    exclude: Collection[str] = (),
    rename: Mapping[str, str] | None = None,
) -> None:
    """Add a flag for every init field of dataclass `cls` to `parser` (or an argument group).

    The flag is `--<prefix>-<field>` with underscores as hyphens, or `--<prefix>-<rename[field]>`;
    its value is stored under `<prefix>_<field>` whatever the spelling, where `dataclass_values`
    reads it; its metavar is the field's name in capitals. A field without a default is a
    required flag. Every flag is checked before any is added, so a field no flag can hold, or a
    flag (or alias) that `parser` has already, adds nothing (PaiError naming it).
    """
    rename = dict(rename or {})
    fields = _init_fields(cls, exclude)
    unknown = sorted(set(rename) - {f.name for f in fields})
    if unknown:
        raise PaiError(f"{cls.__name__} has no field {unknown[0]!r} to rename")
    hints = typing.get_type_hints(cls)
    start = prefix + "-" if prefix else ""
    flags = [
        _flag(f, hints[f.name], start + rename.get(f.name, f.name.replace("_", "-")),
              _dest(prefix, f.name))
        for f in fields
    ]  # fmt: skip
    taken = parser._option_string_actions  # argparse's own table of the flags it has
    for flag in flags:
        for option in flag.option_strings:
            if option in taken:
                raise PaiError(f"flag {option} of {cls.__name__} is taken already")
    for flag in flags:
        action = parser.add_argument(*flag.option_strings, **flag.options)
        action.help = flag.help  # as written: BooleanOptionalAction would append its own default


def dataclass_values(
    args: argparse.Namespace, cls: type, *, prefix: str = "", exclude: Collection[str] = ()
) -> dict[str, Any]:
    """Field name -> parsed value for the flags `add_dataclass_flags` added for `cls`."""
    return {f.name: getattr(args, _dest(prefix, f.name)) for f in _init_fields(cls, exclude)}
