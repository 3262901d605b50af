"""A training duration with its unit: `"500it"` (iterations) or `"2ep"` (epochs).

Integers whose unit one has to guess are a classic source of bugs in rewinding and budgets,
so every duration in pai is a `Step` (after open_lth's `Step`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pai.core.errors import PaiError

_PATTERN = re.compile(r"^\s*(\d+)\s*(it|ep)\s*$")


@dataclass(frozen=True)
class Step:
    """A count of iterations or of epochs; `iterations(steps_per_epoch)` resolves it."""

    count: int
    unit: str  # "it" or "ep"

    @classmethod
    def parse(cls, text: str | int | Step) -> Step:
        """Read `"500it"`, `"2ep"`, a Step, or a bare int (iterations)."""
        if isinstance(text, Step):
            return text
        if isinstance(text, int) and not isinstance(text, bool):
            text = f"{text}it"
        match = _PATTERN.match(str(text))
        if not match:
            raise PaiError(f"bad step {text!r}; write a whole number with a unit: '500it' or '2ep'")
        return cls(int(match.group(1)), match.group(2))

    @classmethod
    def canonical(cls, value: str | int | Step) -> str:
        """The step string of `value`, where a bare whole number (as digits too) counts iterations.

        For flags such as `--rewind 0`, where a unit-less count is the natural spelling.
        """
        if isinstance(value, str) and value.strip().isdigit():
            value = int(value)
        return str(cls.parse(value))

    def iterations(self, steps_per_epoch: int) -> int:
        """The number of iterations this step stands for."""
        return self.count * steps_per_epoch if self.unit == "ep" else self.count

    def __str__(self) -> str:
        return f"{self.count}{self.unit}"
