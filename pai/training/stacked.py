"""Stacked training: K runs of one architecture trained by one loop, each exactly as alone.

Run k of `train_many(models, data, config, masks=..., seeds=...)` gets what
`train(models[k], data, config.replace(seed=seeds[k]), masks=masks[k])` gives it: its own
initial weights and mask, its own data order (a `torch.Generator` seeded with its seed draws
the permutation of every epoch, then each batch's augmentation, as `Split.batches` does),
its own optimizer state, BatchNorm statistics, evaluations and history. The K runs share the
learning rate of every step because they share the config apart from the seed.

How the runs are stacked: every parameter and buffer gets a leading run dimension. Where the
device batches kernels (`BATCHED_KERNELS`: CUDA) each layer computes all K runs in one call,
Linear as one batched matmul (`baddbmm`), Conv2d as one grouped convolution (K times its
groups); BatchNorm2d is always one batch norm over K x C channels (each channel's statistics,
running ones included, are its run's own). Activations are (N, K*C, H, W) for images and
(K, N, F) after the flatten. The other candidate,
`torch.func.stack_module_state` with `vmap(functional_call)`, keeps BatchNorm's running
statistics too when the stacked buffers go through `functional_call` (vmap updates them in
place), but its linear layer rounds differently from one run's `addmm`.

Equivalence: the stacked Linear is differentiated as `addmm` differentiates one run's
`F.linear` (dW = g^T x, dx = g W). On a CPU (`BATCHED_KERNELS`) every layer computes each run
by the solo run's own kernels (an `addmm` and two `mm`s per run for a Linear, one convolution
per run), and evaluation runs each run's own model: 50 steps of lenet300, conv2, vgg11 and
resnet20 with SGD or Adam then end bit for bit where the solo runs end, at any thread count
(`tests/test_stacked.py`). What a CPU stack saves is the rest: one optimizer step, one mask
step and one data gather for all runs. The batched kernels CUDA uses (a batched matmul for
the Linear layers, grouped convolutions) round like the solo ones only with one thread and
oneDNN off (with two threads a lenet300 run trained 50 steps by Adam drifts 5e-5 relative
from its solo run); with bf16 autocast on CUDA no two kernels need agree beyond bf16
rounding.

One optimizer over the stacked tensors is the K solo optimizers: SGD (momentum, Nesterov,
weight decay) and Adam are elementwise, Adam's bias correction depends only on the step count,
which all runs share, and so does the schedule. Masks are stacked too (a dense run's mask is
all ones, and x * 1 = x exactly), so `MaskedStep` keeps every run's pruned weights exactly zero
and a fully pruned layer of one run touches no other run: no op mixes runs.

What cannot be stacked trains one run at a time, with a log line saying why: a layer with
parameters or buffers other than Linear, Conv2d (zero padding) and BatchNorm2d (with a
momentum), a module holding parameters of its own outside those layers, dropout (it draws from
the global RNG), runs whose parameters differ in `requires_grad`, and any model whose stacked
forward does not reproduce its own on a probe batch (a forward that reshapes by hand, say).
Every model of the zoo stacks.

Memory: runs train in stacks of at most `stack_size` (default `default_stack_size`); on CUDA
an out-of-memory error halves the stack and retries once.
"""

from __future__ import annotations

import copy
import logging
import math
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pai.core.errors import PaiError
from pai.data.loading import random_crop_flip
from pai.pruning.masks import Masks
from pai.training.config import TrainConfig
from pai.training.loop import (
    TrainResult,
    _autocast,
    _Plan,
    _plan,
    _progress_bar,
    evaluate,
    train,
)
from pai.training.masked_step import MaskedStep, hold_frozen
from pai.training.schedule import make_optimizer, make_scheduler

log = logging.getLogger(__name__)

EVAL_BATCH = 1000  # examples per evaluation batch of one run, as `evaluate` uses
CPU_STACK_SIZE = 4  # for nets without convolutions: the best aggregate rate on a 2-core CPU
MAX_STACK_SIZE = 64  # the largest stack benchmarked; larger ones lose more to a kill -9
MEMORY_HEADROOM = 0.8  # the share of free device memory a stack may plan to use
# Whether stacked layers run one batched kernel for all K runs on a device type: a grouped
# convolution, batched matmuls for a Linear and its gradients. Else each run gets the kernels
# its solo run calls, once per run, which is what a CPU gets: there oneDNN's grouped kernels
# were slower than one convolution per run at K = 16 for conv4 and resnet20 (bench_stack
# --candidates), and the batched kernels round differently from the solo ones.
BATCHED_KERNELS: dict[str, bool] = {"cpu": False, "cuda": True}


def _batched(device: torch.device) -> bool:
    """Whether `device` computes a stack's runs by batched kernels (`BATCHED_KERNELS`)."""
    return BATCHED_KERNELS.get(device.type, True)


# --- the stacked layers ---------------------------------------------------------------------


def _stacked(tensors: Sequence[Tensor | None]) -> Tensor | None:
    """The tensors stacked along a new leading run dimension (None when the layer has none)."""
    if tensors[0] is None:
        return None
    return torch.stack([t.detach() for t in tensors])  # type: ignore[union-attr]


def _parameter(tensors: Sequence[Tensor | None]) -> nn.Parameter | None:
    stacked = _stacked(tensors)
    if stacked is None:
        return None
    return nn.Parameter(stacked, requires_grad=tensors[0].requires_grad)  # type: ignore[union-attr]


class _BatchedLinear(torch.autograd.Function):
    """x @ W^T + b for K runs at once, (K, N, in) -> (K, N, out), differentiated as `addmm`
    differentiates one run's `F.linear`: dW = g^T x, dx = g W, db = sum of g over examples;
    each product one batched matmul, or one solo kernel per run (`BATCHED_KERNELS`)."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        if not _batched(x.device):  # each run by its solo `addmm`
            if bias is None:
                return torch.stack([xs.mm(w.t()) for xs, w in zip(x, weight, strict=True)])
            runs = zip(bias, x, weight, strict=True)
            return torch.stack([torch.addmm(b, xs, w.t()) for b, xs, w in runs])
        if bias is None:
            return torch.bmm(x, weight.transpose(1, 2))
        return torch.baddbmm(bias.unsqueeze(1), x, weight.transpose(1, 2))

    @staticmethod
    def backward(ctx, grad: Tensor):
        x, weight = ctx.saved_tensors
        batched = _batched(grad.device)
        grad_x = grad_weight = None
        if ctx.needs_input_grad[0]:
            if batched:
                grad_x = torch.bmm(grad, weight)
            else:
                grad_x = torch.stack([g.mm(w) for g, w in zip(grad, weight, strict=True)])
        if ctx.needs_input_grad[1]:
            if batched:
                grad_weight = torch.bmm(grad.transpose(1, 2), x)
            else:
                grad_weight = torch.stack([g.t().mm(xs) for g, xs in zip(grad, x, strict=True)])
        grad_bias = grad.sum(1) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return grad_x, grad_weight, grad_bias


class _StackedLinear(nn.Module):
    """K Linear layers: (K, N, in) -> (K, N, out) by one batched matmul.

    Under autocast the inputs are cast to its dtype first, as autocast casts `addmm`'s (bf16
    on CUDA); the casts' backward returns the gradients in the parameters' dtype.
    """

    def __init__(self, layers: Sequence[nn.Linear]):
        super().__init__()
        self.weight = _parameter([layer.weight for layer in layers])
        self.bias = _parameter([layer.bias for layer in layers])

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 3:
            raise PaiError(f"a stacked Linear takes (runs, N, features), got {tuple(x.shape)}")
        weight, bias = self.weight, self.bias
        if torch.is_autocast_enabled(x.device.type):
            dtype = torch.get_autocast_dtype(x.device.type)
            x, weight = x.to(dtype), weight.to(dtype)
            bias = None if bias is None else bias.to(dtype)
        return _BatchedLinear.apply(x, weight, bias)


class _StackedConv2d(nn.Module):
    """K Conv2d layers: (N, K*C, H, W) -> (N, K*O, H', W').

    With `BATCHED_KERNELS` for the device, one convolution with K times the groups (group g of
    run k sees only run k's channels); else one convolution per run on its channels.
    """

    def __init__(self, layers: Sequence[nn.Conv2d]):
        super().__init__()
        first = layers[0]
        self.runs = len(layers)
        self.stride, self.padding = first.stride, first.padding
        self.dilation, self.groups = first.dilation, first.groups
        self.weight = _parameter([layer.weight for layer in layers])
        self.bias = _parameter([layer.bias for layer in layers])

    def forward(self, x: Tensor) -> Tensor:
        settings = (self.stride, self.padding, self.dilation)
        if _batched(x.device):
            bias = None if self.bias is None else self.bias.flatten()
            groups = self.groups * self.runs
            return F.conv2d(x, self.weight.flatten(0, 1), bias, *settings, groups)
        biases = [None] * self.runs if self.bias is None else self.bias
        parts = x.chunk(self.runs, dim=1)
        return torch.cat(
            [
                F.conv2d(part, weight, bias, *settings, self.groups)
                for part, weight, bias in zip(parts, self.weight, biases, strict=True)
            ],
            dim=1,
        )


class _StackedBatchNorm2d(nn.Module):
    """K BatchNorm2d layers as one batch norm over K*C channels: channel (k, c) is normalized
    by its own batch statistics, and its running statistics are run k's channel c."""

    def __init__(self, layers: Sequence[nn.BatchNorm2d]):
        super().__init__()
        first = layers[0]
        self.momentum, self.eps = first.momentum, first.eps
        self.weight = _parameter([layer.weight for layer in layers])
        self.bias = _parameter([layer.bias for layer in layers])
        self.track_running_stats = first.track_running_stats
        for name in ("running_mean", "running_var", "num_batches_tracked"):
            self.register_buffer(name, _stacked([getattr(layer, name) for layer in layers]))

    def forward(self, x: Tensor) -> Tensor:
        if self.training and self.track_running_stats:
            self.num_batches_tracked.add_(1)
        tracked = self.running_mean is not None
        return F.batch_norm(
            x,
            self.running_mean.flatten() if tracked else None,
            self.running_var.flatten() if tracked else None,
            None if self.weight is None else self.weight.flatten(),
            None if self.bias is None else self.bias.flatten(),
            self.training or not tracked,
            self.momentum,
            self.eps,
        )


class _StackedFlatten(nn.Module):
    """`nn.Flatten()` of K runs: (N, K*C, H, W) -> (K, N, C*H*W); (K, N, F) is already flat."""

    def __init__(self, runs: int):
        super().__init__()
        self.runs = runs

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() == 3:
            return x
        return x.reshape(x.shape[0], self.runs, -1).transpose(0, 1).contiguous()


_STACKED: dict[type, Callable[[list], nn.Module]] = {
    nn.Linear: _StackedLinear,
    nn.Conv2d: _StackedConv2d,
    nn.BatchNorm2d: _StackedBatchNorm2d,
}


def unstackable_reason(model: nn.Module) -> str | None:
    """Why `model`'s architecture cannot be stacked, or None when it can (as far as its modules
    tell; `train_many` also checks the stacked forward on a probe batch)."""
    for name, module in model.named_modules():
        label = f"{name or 'the model'} ({type(module).__name__})"
        own = list(module.parameters(recurse=False)) + list(module.buffers(recurse=False))
        if isinstance(module, nn.modules.dropout._DropoutNd):
            return f"{label} draws from the global RNG, which a stack cannot split by run"
        if isinstance(module, nn.Flatten) and (module.start_dim, module.end_dim) != (1, -1):
            return f"{label} flattens dims {module.start_dim}..{module.end_dim}, not 1..-1"
        if not own:
            continue
        if type(module) not in _STACKED:
            return f"{label} holds parameters or buffers; stacked are only {_stackable_names()}"
        if isinstance(module, nn.Conv2d) and module.padding_mode != "zeros":
            return f"{label} pads with {module.padding_mode!r}; stacked convs pad with zeros"
        if isinstance(module, nn.BatchNorm2d) and module.momentum is None:
            return f"{label} keeps a cumulative average (momentum=None)"
    return None


def _stackable_names() -> str:
    return ", ".join(cls.__name__ for cls in _STACKED)


def _check_same_architecture(models: Sequence[nn.Module]) -> None:
    """Raise unless every model has the first one's modules (with their settings: stride,
    padding, eps, ...), parameter and buffer shapes."""

    def layout(model: nn.Module) -> list[tuple[str, object]]:
        modules = [(n, type(m), m.extra_repr()) for n, m in model.named_modules()]
        tensors = [(name, tuple(t.shape)) for name, t in model.state_dict().items()]
        return modules + tensors

    reference = layout(models[0])
    for index, model in enumerate(models[1:], start=1):
        if layout(model) != reference:
            raise PaiError(
                f"train_many needs models of one architecture; model {index} differs from "
                f"model 0 in its modules, their settings or tensor shapes"
            )


def stack_modules(models: Sequence[nn.Module]) -> nn.Module:
    """One module computing all `models` at once: parameters and buffers of shape (K, ...)
    under the models' own names; inputs (N, K*C, H, W), outputs (K, N, classes).

    The models must share an architecture that `unstackable_reason` accepts.
    """
    runs = len(models)
    stacked = copy.deepcopy(models[0])
    named = [dict(model.named_modules()) for model in models]
    for name, module in list(stacked.named_modules()):
        if not name:
            continue
        parent_name, _, attribute = name.rpartition(".")
        parent = stacked.get_submodule(parent_name)
        if type(module) in _STACKED:
            setattr(parent, attribute, _STACKED[type(module)]([n[name] for n in named]))
        elif isinstance(module, nn.Flatten):
            setattr(parent, attribute, _StackedFlatten(runs))
    return stacked


def _stacked_input(x: Tensor, runs: int) -> Tensor:
    """The same examples for every run: (N, C, H, W) -> (N, K*C, H, W)."""
    return x.repeat(1, runs, 1, 1)


@torch.no_grad()
def _forward_mismatch(stacked: nn.Module, models: Sequence[nn.Module], x: Tensor) -> str | None:
    """Why the stacked forward is not each model's own on `x` in eval mode, or None."""
    modes = [model.training for model in models]
    stacked.eval()
    try:
        out = stacked(_stacked_input(x, len(models)))
        for index, model in enumerate(models):
            own = model.eval()(x)
            if out.shape[0] != len(models) or out[index].shape != own.shape:
                return f"its stacked output has shape {tuple(out.shape)}, each run's {own.shape}"
            gap = (out[index] - own).abs().max().item()
            if not gap <= 0.01 * own.abs().max().item() + 1e-6:
                return f"its stacked forward differs from run {index}'s own by {gap:.3g}"
    except (RuntimeError, PaiError) as error:
        return f"its forward fails on stacked inputs ({' '.join(str(error).split())[:200]})"
    finally:
        for model, mode in zip(models, modes, strict=True):
            model.train(mode)
    return None


# --- one stack -----------------------------------------------------------------------------


class _Stack:
    """K runs' stacked module, optimizer, schedule and masks, stepped together."""

    def __init__(
        self,
        models: Sequence[nn.Module],
        masks: Sequence[Masks | None],
        frozen: Sequence[Mapping[str, Tensor] | None],
        config: TrainConfig,
        plan: _Plan,
    ):
        self.runs = len(models)
        self.module = stack_modules(models)
        stacked_masks, stacked_frozen = {}, {}
        for name in sorted({n for m in masks if m is not None for n in m}):
            param = models[0].get_parameter(name)
            kept = torch.ones(param.shape, dtype=torch.bool, device=param.device)
            zero = torch.zeros_like(param)
            stacked_masks[name] = torch.stack(
                [m[name] if m is not None and name in m else kept for m in masks]
            )
            stacked_frozen[name] = torch.stack(
                [f[name].to(param) if f is not None and name in f else zero for f in frozen]
            )
        self.optimizer = make_optimizer(self.module, config)
        self.scheduler = make_scheduler(
            self.optimizer, config, plan.steps_per_epoch, plan.total, plan.first
        )
        self.masked_step = MaskedStep(
            self.optimizer,
            self.module,
            Masks(stacked_masks),
            stacked_frozen if any(f is not None for f in frozen) else None,
        )

    def losses(self, x: Tensor, y: Tensor) -> Tensor:
        """Each run's mean cross-entropy on its batch: x (N, K*C, H, W), y (K, N) -> (K,)."""
        logits = self.module(x)
        if not _batched(logits.device):  # as each solo run averages
            return torch.stack(
                [F.cross_entropy(out, ys) for out, ys in zip(logits, y, strict=True)]
            )
        runs, n, classes = logits.shape
        per_example = F.cross_entropy(
            logits.reshape(runs * n, classes), y.reshape(-1), reduction="none"
        )
        return per_example.view(runs, n).sum(1) / n

    def step(self, x: Tensor, y: Tensor, device: torch.device) -> Tensor:
        """One optimizer step of every run; returns the K losses before it."""
        with _autocast(device):
            losses = self.losses(x, y)
        self.optimizer.zero_grad(set_to_none=True)
        losses.sum().backward()  # run k's parameters get exactly the gradient of its loss
        self.masked_step.step()
        self.scheduler.step()
        return losses.detach()

    @torch.no_grad()
    def evaluate(
        self, split, batch_size: int, models: Sequence[nn.Module]
    ) -> list[tuple[float, float]]:
        """Each run's top-1 accuracy and mean cross-entropy on `split`, as `evaluate` defines
        them (per-batch float32 loss sums, accumulated in float64).

        Where the device computes runs by their solo kernels (`BATCHED_KERNELS` off: a CPU),
        each run's weights are written into its own model and `evaluate` runs it, which is
        faster there than the stacked forward and gives exactly the solo numbers.
        """
        if not _batched(split.x.device):
            self.write_back(models)
            return [evaluate(model, split) for model in models]
        self.module.eval()
        device = split.x.device
        correct = torch.zeros(self.runs, dtype=torch.int64, device=device)
        loss_sum = torch.zeros(self.runs, dtype=torch.float64, device=device)
        for x, y in split.eval_batches(batch_size):
            with _autocast(device):
                logits = self.module(_stacked_input(x, self.runs))
            logits = logits.float()
            loss_sum += torch.stack(
                [F.cross_entropy(logits[k], y, reduction="sum") for k in range(self.runs)]
            ).double()
            correct += (logits.argmax(dim=2) == y).sum(1)
        self.module.train()
        n = len(split)
        return [(c / n, s / n) for c, s in zip(correct.tolist(), loss_sum.tolist(), strict=True)]

    def run_state(self, model: nn.Module, run: int) -> dict[str, Tensor]:
        """Run `run`'s state_dict, keyed and ordered as `model`'s, as copies."""
        state = self.module.state_dict()
        return {name: state[name][run].detach().clone() for name in model.state_dict()}

    @torch.no_grad()
    def write_back(self, models: Sequence[nn.Module]) -> None:
        """Copy each run's trained parameters and buffers into its model."""
        state = self.module.state_dict()
        for run, model in enumerate(models):
            for name, tensor in model.state_dict().items():
                tensor.copy_(state[name][run])


class _Record:
    """The history rows and metrics of K runs, each defined as `History` defines one run's.

    Losses are summed per run on the device in float64, so a step does not synchronize.
    """

    def __init__(self, runs: int, steps_per_epoch: int, device: torch.device):
        self.rows: list[list[dict[str, float | int]]] = [[] for _ in range(runs)]
        self.eval_seconds = 0.0
        self.steps = 0
        self.start = time.perf_counter()
        self._steps_per_epoch = steps_per_epoch
        self._loss_sum = torch.zeros(runs, dtype=torch.float64, device=device)
        self._loss_count = 0
        self._last_train_loss = [math.nan] * runs
        self._initial_loss = torch.full((runs,), math.nan, dtype=torch.float64, device=device)

    def add_train_loss(self, losses: Tensor) -> None:
        values = losses.double()
        if self.steps == 0:
            self._initial_loss = values
        self._loss_sum += values
        self._loss_count += 1
        self.steps += 1

    def record(self, step: int, lr: float, evaluate: Callable[[], list[tuple[float, float]]]):
        if self._loss_count:
            self._last_train_loss = [s / self._loss_count for s in self._loss_sum.tolist()]
        eval_start = time.perf_counter()
        evaluations = evaluate()
        self.eval_seconds += time.perf_counter() - eval_start
        seconds = time.perf_counter() - self.start
        for rows, (accuracy, test_loss), train_loss in zip(
            self.rows, evaluations, self._last_train_loss, strict=True
        ):
            rows.append(
                {
                    "step": step,
                    "epoch": step / self._steps_per_epoch,
                    "train_loss": train_loss,
                    "test_accuracy": accuracy,
                    "test_loss": test_loss,
                    "lr": lr,
                    "seconds": seconds,
                }
            )
        self._loss_sum.zero_()
        self._loss_count = 0

    def metrics(self, run: int, start_step: int, density: float) -> dict[str, float | int]:
        rows = self.rows[run]
        return {
            "test_accuracy": rows[-1]["test_accuracy"],
            "best_test_accuracy": max(row["test_accuracy"] for row in rows),
            "test_loss": rows[-1]["test_loss"],
            "train_loss": rows[-1]["train_loss"],
            "initial_train_loss": self._initial_loss[run].item(),
            "epochs": self.steps / self._steps_per_epoch,
            "steps": self.steps,
            "start_step": start_step,
            "wall_seconds": time.perf_counter() - self.start,
            "eval_seconds": self.eval_seconds,
            "density": density,
            "resumed_from_step": 0,
            "attempt_steps": self.steps,
            "stack_size": len(self.rows),
        }


def _epoch_orders(count: int, generators: Sequence[torch.Generator], device: torch.device):
    """Each run's permutation of one epoch, drawn as `Split.batches` draws it: (K, count)."""
    return torch.stack(
        [torch.randperm(count, generator=g, device=g.device).to(device) for g in generators]
    )


def _gather(split, index: Tensor, generators, augment: bool) -> tuple[Tensor, Tensor]:
    """The batches of K runs from their indices (K, N): x (N, K*C, H, W) and y (K, N).

    With `augment`, each run's batch goes through `random_crop_flip` with its own generator,
    as in `Split.batches`.
    """
    runs, n = index.shape
    if augment:
        x = torch.stack(
            [
                random_crop_flip(split.x[index[k]], g, pad_value=split.pad_value)
                for k, g in enumerate(generators)
            ],
            dim=1,
        )
    else:
        x = split.x[index.T]  # (N, K, C, H, W)
    return x.reshape(n, -1, *x.shape[3:]), split.y[index]


def _train_stack(
    models: Sequence[nn.Module],
    data,
    config: TrainConfig,
    runs: _Runs,
    plan: _Plan,
    device: torch.device,
    progress: bool | None,
) -> list[TrainResult]:
    """Train `models` as one stack from `plan.first` to `plan.total`; write the weights back."""
    stack = _Stack(models, runs.masks, runs.frozen, config, plan)
    count = len(models)
    generators = [torch.Generator(device=data.train.x.device).manual_seed(s) for s in runs.seeds]
    eval_batch = min(EVAL_BATCH, max(config.batch_size, EVAL_BATCH // count))
    record = _Record(count, plan.steps_per_epoch, device)
    results = [TrainResult(metrics={}, history=rows) for rows in record.rows]

    def snapshot(iteration: int) -> None:
        if iteration in plan.snapshots:
            for run, (model, result) in enumerate(zip(models, results, strict=True)):
                result.snapshots[plan.snapshots[iteration]] = stack.run_state(model, run)

    split = data.train
    iteration, to_skip = plan.first, plan.first
    bar = _progress_bar(progress, plan.total - plan.first)
    snapshot(iteration)
    stack.module.train()
    try:
        while iteration < plan.total:
            orders = _epoch_orders(len(split), generators, split.device)
            for start in range(0, len(split), config.batch_size):
                index = orders[:, start : start + config.batch_size]
                if to_skip:
                    to_skip -= 1
                    if plan.augment:  # the skipped batch's draws, as the solo loop makes them
                        _gather(split, index, generators, augment=True)
                    continue
                x, y = _gather(split, index, generators, plan.augment)
                record.add_train_loss(stack.step(x, y, device))
                iteration += 1
                bar.update(1)
                snapshot(iteration)
                if iteration % plan.eval_every == 0 or iteration == plan.total:
                    lr = stack.optimizer.param_groups[0]["lr"]
                    evaluations = lambda: stack.evaluate(data.test, eval_batch, models)  # noqa: E731
                    record.record(iteration, lr, evaluations)
                    accuracy = sum(rows[-1]["test_accuracy"] for rows in record.rows) / count
                    bar.set_postfix(runs=count, mean_acc=f"{accuracy:.4f}")
                if iteration == plan.total:
                    break
    finally:
        bar.close()
    stack.write_back(models)
    for run, (result, masks) in enumerate(zip(results, runs.masks, strict=True)):
        result.metrics = record.metrics(run, plan.first, masks.density if masks else 1.0)
    return results


# --- many runs -----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Runs:
    """What differs between the runs of a group besides their models: one entry per run."""

    masks: list[Masks | None]
    seeds: list[int]
    frozen: list[Mapping[str, Tensor] | None]

    def part(self, chunk: slice) -> _Runs:
        return _Runs(self.masks[chunk], self.seeds[chunk], self.frozen[chunk])


def stack_size_for_memory(free_bytes: int, per_run_bytes: int, cap: int) -> int:
    """How many runs of `per_run_bytes` fit in `MEMORY_HEADROOM` of `free_bytes`: 1 to `cap`."""
    if per_run_bytes <= 0:
        return cap
    return max(1, min(cap, int(MEMORY_HEADROOM * free_bytes // per_run_bytes)))


def _footprint_bytes(model: nn.Module, data, config: TrainConfig, device: torch.device) -> int:
    """Peak CUDA memory of one training step of a stack of two copies of `model`, per run:
    parameters, gradients, optimizer state and the activations of one batch."""
    copies = [copy.deepcopy(model).to(device) for _ in range(2)]
    plan = _plan(data, config, (), "0it", None)
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    stack = _Stack(copies, [None, None], [None, None], config, plan)
    index = torch.arange(min(config.batch_size, len(data.train)), device=data.train.device)
    x, y = _gather(data.train, index.expand(2, -1), [], augment=False)
    stack.step(x, y, device)
    torch.cuda.synchronize(device)
    peak = torch.cuda.max_memory_allocated(device) - before
    del stack, copies, x, y
    torch.cuda.empty_cache()
    return math.ceil(peak / 2)


def _memory_limit(model: nn.Module, data, config: TrainConfig, device: torch.device) -> int:
    """The most runs of `model` a CUDA stack may hold (`MEMORY_HEADROOM` of the free memory
    over the measured footprint of a run); no limit elsewhere."""
    if device.type != "cuda":
        return sys.maxsize
    per_run = _footprint_bytes(model, data, config, device)
    free, _ = torch.cuda.mem_get_info(device)
    return stack_size_for_memory(free, per_run, sys.maxsize)


def default_stack_size(
    model: nn.Module, data, config: TrainConfig, device: torch.device | str | None = None
) -> int:
    """How many runs of `model` to stack by default on `device` (default: the data's).

    On CUDA: as many as fit in `MEMORY_HEADROOM` of the free memory given the measured
    footprint of one run (one training step of a stack of two), at most `MAX_STACK_SIZE`. On a
    CPU, as measured by `benchmarks/bench_stack.py` on a 2-core CPU: `CPU_STACK_SIZE` for a
    net without convolutions (lenet300's aggregate rate peaks there, about 1.2x one run after
    another; the arithmetic, which stacking does not reduce, bounds it), 1 for a net with
    convolutions, whose stacks were slower there than one run after another at every K.
    """
    device = torch.device(device) if device is not None else data.train.x.device
    if device.type != "cuda":
        convolutional = any(isinstance(m, nn.modules.conv._ConvNd) for m in model.modules())
        return 1 if convolutional else CPU_STACK_SIZE
    return min(MAX_STACK_SIZE, _memory_limit(model, data, config, device))


def _train_alone(models, data, config, runs: _Runs, device, progress, train_args):
    """Each run by `train`, one after the other (a stack of one)."""
    results = []
    for model, masks, seed, frozen in zip(models, runs.masks, runs.seeds, runs.frozen, strict=True):
        result = train(
            model,
            data,
            config.replace(seed=seed),
            masks=masks,
            device=device,
            progress=progress,
            frozen=frozen,
            **train_args,
        )
        result.metrics["stack_size"] = 1
        results.append(result)
    return results


def train_many(
    models: Sequence[nn.Module],
    data,
    config: TrainConfig,
    *,
    masks: Sequence[Masks | None] | None = None,
    seeds: Sequence[int] | None = None,
    frozen: Sequence[Mapping[str, Tensor] | None] | None = None,
    device: torch.device | str | None = None,
    progress: bool | None = None,
    stack_size: int | None = None,
    snapshot_at: tuple[str, ...] = (),
    start_at: str = "0it",
    on_trained: Callable[[int, TrainResult], None] | None = None,
) -> list[TrainResult]:
    """Train `models` (one architecture) in place, in stacks; one `TrainResult` per model.

    Run k gets what `train(models[k], data, config.replace(seed=seeds[k]), masks=masks[k],
    frozen=frozen[k], snapshot_at=snapshot_at, start_at=start_at)` gives it; its metrics add
    `stack_size`, the number of runs that shared its loop (`wall_seconds` and `eval_seconds`
    are the stack's). `masks[k]` None is dense; `seeds` default to `config.seed` for every
    run. `stack_size` bounds a stack (default `default_stack_size`; 1 trains each run with
    `train`); on CUDA a stack never exceeds what the free memory holds. `on_trained(k, result)`
    is called as soon as run k's stack ends, so a caller can store it before the next stack.
    An architecture that cannot be stacked trains one run at a time, with a log line.
    """
    models = list(models)
    runs = _checked_runs(models, masks, seeds, frozen, config)
    if stack_size is not None and (not isinstance(stack_size, int) or stack_size < 1):
        raise PaiError(f"stack size must be a whole number >= 1, got {stack_size!r}")
    _check_same_architecture(models)
    device = torch.device(device) if device is not None else data.train.x.device
    for model, run_masks in zip(models, runs.masks, strict=True):
        model.to(device)
        if run_masks is not None:
            run_masks.check_model(model)
    runs = _Runs(
        [m.to(device) if m is not None else None for m in runs.masks], runs.seeds, runs.frozen
    )
    size = _stack_size(models, data, config, device, stack_size)
    if size > 1:
        for model, run_masks, run_frozen in zip(models, runs.masks, runs.frozen, strict=True):
            if run_masks is not None:
                run_masks.apply(model)
                if run_frozen is not None:
                    hold_frozen(model, run_masks, run_frozen)
    plan = _plan(data, config, snapshot_at, start_at, None)
    train_args = {"snapshot_at": snapshot_at, "start_at": start_at}

    def train_part(chunk: slice) -> list[TrainResult]:
        if chunk.stop - chunk.start == 1:
            return _train_alone(
                models[chunk], data, config, runs.part(chunk), device, progress, train_args
            )
        return _train_stack(models[chunk], data, config, runs.part(chunk), plan, device, progress)

    return _train_in_stacks(len(models), size, train_part, device, on_trained)


def _checked_runs(models, masks, seeds, frozen, config: TrainConfig) -> _Runs:
    """One mask, seed and frozen values per model (None: dense, `config.seed`, none)."""
    count = len(models)
    if not count:
        raise PaiError("train_many needs at least one model, got none")
    runs = _Runs(
        list(masks) if masks is not None else [None] * count,
        list(seeds) if seeds is not None else [config.seed] * count,
        list(frozen) if frozen is not None else [None] * count,
    )
    if not len(runs.masks) == len(runs.seeds) == len(runs.frozen) == count:
        raise PaiError(
            f"train_many got {count} models, {len(runs.masks)} masks, {len(runs.seeds)} seeds "
            f"and {len(runs.frozen)} frozen; give one of each (or None) per model"
        )
    for run_masks, run_frozen in zip(runs.masks, runs.frozen, strict=True):
        if run_masks is None and run_frozen is not None:
            raise PaiError("frozen values need masks; a run without masks got frozen values")
    return runs


def _stack_size(models, data, config: TrainConfig, device, wanted: int | None) -> int:
    """The runs per stack: 1 when asked or when the models cannot be stacked (with a log line
    saying why), else `wanted` (default `default_stack_size`) within the free memory."""
    if wanted == 1 or len(models) == 1:
        return 1
    reason = _stacking_blocker(models, data)
    if reason is not None:
        name = type(models[0]).__name__
        log.warning("%s cannot be stacked: %s; training its %d runs one at a time", name,
                    reason, len(models))  # fmt: skip
        return 1
    wanted = wanted or default_stack_size(models[0], data, config, device)
    size = min(wanted, _memory_limit(models[0], data, config, device))
    if size < wanted:
        log.warning("a stack of %d runs would not fit in memory; stacking %d", wanted, size)
    return size


def _train_in_stacks(
    count: int,
    size: int,
    train_part: Callable[[slice], list[TrainResult]],
    device: torch.device,
    on_trained: Callable[[int, TrainResult], None] | None,
) -> list[TrainResult]:
    """Runs 0 to `count` - 1 trained by `train_part` in consecutive stacks of `size`; an
    out-of-memory error halves the stack and retries once, with a log line."""
    results: list[TrainResult] = []
    retried = False
    while len(results) < count:
        chunk = slice(len(results), min(count, len(results) + size))
        try:
            trained = train_part(chunk)
        except torch.OutOfMemoryError:
            if retried or chunk.stop - chunk.start == 1:
                raise
            retried, size = True, -(-(chunk.stop - chunk.start) // 2)
            log.warning(
                "out of memory in a stack of %d runs; retrying in stacks of %d",
                chunk.stop - chunk.start,
                size,
            )
            if device.type == "cuda":
                torch.cuda.empty_cache()
            continue
        for result in trained:
            if on_trained is not None:
                on_trained(len(results), result)
            results.append(result)
    return results


def _stacking_blocker(models: Sequence[nn.Module], data) -> str | None:
    """Why these runs cannot share a stack (None: they can): their modules, their
    `requires_grad` flags, or a stacked forward that differs from each run's own."""
    reason = unstackable_reason(models[0])
    if reason is None:
        flags = [[p.requires_grad for p in model.parameters()] for model in models]
        if any(f != flags[0] for f in flags):
            reason = "its runs differ in which parameters require gradients"
    if reason is None:
        reason = _forward_mismatch(stack_modules(models[:2]), models[:2], data.test.x[:2])
    return reason
