"""PX, Path eXclusion (Iurada et al., CVPR 2024, "Finding Lottery Tickets in Vision Models via
Data-driven Spectral Foresight Pruning"): keep the weights the data's paths depend on most."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call
from torch.overrides import TorchFunctionMode

from pai.core.errors import PaiError
from pai.pruning.masks import Masks
from pai.pruning.registry import Scorer, ScoringContext

_RELUS = frozenset({F.relu, F.relu_, torch.relu, torch.relu_, Tensor.relu, Tensor.relu_})


class _ReluAs(TorchFunctionMode):
    """Inside the block every ReLU, module or functional, computes `replacement(input)`."""

    def __init__(self, replacement: Callable[[Tensor], Tensor]):
        super().__init__()
        self.replacement = replacement

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func in _RELUS:
            return self.replacement(args[0])
        return func(*args, **(kwargs or {}))


class PxScorer(Scorer):
    """Score u * dR/du at u = w^2 (the squared masked weights), with the path-kernel estimate

        R = sum_x sum_k z1_k(x) * z2_k,

    z1(x) the output of the path activation network: every kept weight 1 (pruned ones 0), biases
    and BatchNorm shifts 0, BatchNorm the identity, each ReLU replaced by the 0/1 gate of the
    real masked network on x, fed x^2 element-wise; z2 the output of the path-kernel network:
    every parameter and floating buffer squared, ReLUs removed, fed all ones. A path p from
    input i to output k contributes x_i^2 * a_p(x) to z1 and the product of its squared weights
    to z2, so R estimates the data-dependent trace of the tangent kernel; the scores are
    nonnegative. Images are used without their labels; 100 rounds as in the paper. Pools stay
    as they are in both networks, as in the authors' code; the ReLU is the only nonlinearity
    that is gated. Both networks run in float64: z1 grows like the product of the layers'
    fan-ins (about 1e55 on ResNet-20), past float32's range.
    """

    name = "px"
    needs_data = True
    default_rounds = 100
    description = "w^2 * dR/dw^2, R the data's path-kernel estimate (Iurada et al. 2024)"

    def score(self, model: nn.Module, masks: Masks, context: ScoringContext) -> dict[str, Tensor]:
        if not context.data:
            raise PaiError("px needs data: pass data= as (inputs, targets) batches")
        state = {name: value.detach().double() for name, value in _floating_state(model).items()}
        squared = {name: value.pow(2) for name, value in state.items()}
        u = {name: squared[name].requires_grad_() for name in masks}
        paths = {
            name: torch.zeros_like(value)
            if name.rpartition(".")[2] in ("bias", "running_mean")
            else torch.ones_like(value)
            for name, value in state.items()
        }
        paths.update({name: mask.double() for name, mask in masks.items()})
        with torch.no_grad():
            activations = sum(
                _gated_output(model, paths, inputs).sum(0) for inputs, _ in context.data
            )
        ones = torch.ones(1, *context.data[0][0].shape[1:], dtype=torch.float64)
        with _ReluAs(lambda x: x):
            kernel = functional_call(model, squared, (ones.to(context.device),))[0]
        grads = self.gradients((activations * kernel).sum(), u)
        return {name: (u[name] * grads[name]).detach() for name in masks}


def _gated_output(model: nn.Module, state: dict[str, Tensor], inputs: Tensor) -> Tensor:
    """The output on inputs^2 of `model` with `state`, each ReLU gated as `model` gates inputs."""
    gates: list[Tensor] = []

    def record(x: Tensor) -> Tensor:
        gates.append(x > 0)
        return torch.relu(x)

    def gate(x: Tensor) -> Tensor:
        return x * gates.pop(0).to(x.dtype)

    with _ReluAs(record):
        model(inputs)
    with _ReluAs(gate):
        return functional_call(model, state, (inputs.double().pow(2),))


def _floating_state(model: nn.Module) -> dict[str, Tensor]:
    """Every parameter and floating-point buffer of `model`, by name."""
    state = dict(model.named_parameters())
    state.update({n: b for n, b in model.named_buffers() if b.is_floating_point()})
    return state
