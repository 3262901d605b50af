"""What a training run records: the running train loss, evaluation rows and final metrics."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor


class History:
    """The evaluation record of one training run.

    `train_loss` in a row is the mean loss of the batches trained since the previous row (the
    previous row's value when none were); `seconds` counts from the history's creation. The
    loss sum is kept on the device in float64, so recording a step does not synchronize.
    """

    def __init__(
        self,
        evaluate: Callable[[], tuple[float, float]],
        steps_per_epoch: int,
        device: torch.device,
    ):
        self.rows: list[dict[str, float | int]] = []
        self.eval_seconds = 0.0
        self.steps = 0  # batches trained, each given to `add_train_loss`
        self.start = time.perf_counter()
        self._evaluate = evaluate  # () -> (test accuracy, test loss)
        self._steps_per_epoch = steps_per_epoch
        self._device = device
        self._loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        self._loss_count = 0
        self._last_train_loss = math.nan
        self._initial_loss = torch.full((), math.nan, dtype=torch.float64, device=device)

    def add_train_loss(self, loss: Tensor) -> None:
        """Count one trained batch's loss; the first one is kept as the initial train loss."""
        value = loss.detach().double()
        if self.steps == 0:
            self._initial_loss = value
        self._loss_sum += value
        self._loss_count += 1
        self.steps += 1

    @property
    def last_step(self) -> int | None:
        """The step of the newest row (None before the first)."""
        return self.rows[-1]["step"] if self.rows else None  # type: ignore[return-value]

    def record(self, step: int, lr: float) -> dict[str, float | int]:
        """Evaluate now and append a row for `step` at learning rate `lr`; returns the row."""
        if self._loss_count:
            self._last_train_loss = self._loss_sum.item() / self._loss_count
        eval_start = time.perf_counter()
        accuracy, test_loss = self._evaluate()
        self.eval_seconds += time.perf_counter() - eval_start
        row = {
            "step": step,
            "epoch": step / self._steps_per_epoch,
            "train_loss": self._last_train_loss,
            "test_accuracy": accuracy,
            "test_loss": test_loss,
            "lr": lr,
            "seconds": time.perf_counter() - self.start,
        }
        self.rows.append(row)
        self._loss_sum = torch.zeros((), dtype=torch.float64, device=self._device)
        self._loss_count = 0
        return row

    def state(self) -> dict[str, Any]:
        """Everything the rest of the record depends on, for a checkpoint (tensors on the CPU)."""
        return {
            "rows": [dict(row) for row in self.rows],
            "eval_seconds": self.eval_seconds,
            "steps": self.steps,
            "elapsed": time.perf_counter() - self.start,
            "loss_sum": self._loss_sum.cpu(),
            "loss_count": self._loss_count,
            "last_train_loss": self._last_train_loss,
            "initial_loss": self._initial_loss.cpu(),
        }

    def restore(self, state: Mapping[str, Any]) -> None:
        """Continue the record of `state()`: the same rows, running sums and elapsed time."""
        self.rows[:] = [dict(row) for row in state["rows"]]
        self.eval_seconds = state["eval_seconds"]
        self.steps = state["steps"]
        self.start = time.perf_counter() - state["elapsed"]
        self._loss_sum = state["loss_sum"].to(self._device)
        self._loss_count = state["loss_count"]
        self._last_train_loss = state["last_train_loss"]
        self._initial_loss = state["initial_loss"].to(self._device)

    def metrics(self, start_step: int, density: float) -> dict[str, float | int]:
        """The run's metrics: the last row's, the best accuracy, the initial loss, the cost."""
        final = self.rows[-1]
        return {
            "test_accuracy": final["test_accuracy"],
            "best_test_accuracy": max(row["test_accuracy"] for row in self.rows),
            "test_loss": final["test_loss"],
            "train_loss": final["train_loss"],
            "initial_train_loss": self._initial_loss.item(),
            "epochs": self.steps / self._steps_per_epoch,
            "steps": self.steps,
            "start_step": start_step,
            "wall_seconds": time.perf_counter() - self.start,
            "eval_seconds": self.eval_seconds,
            "density": density,
        }
