"""NTK-SAP (Wang et al. 2023, "NTK-SAP: Improving neural network pruning by aligning training
dynamics"): keep the weights the network's tangent kernel depends on most, without data."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.func import functional_call

from pai.core.errors import PaiError
from pai.pruning.masks import Masks
from pai.pruning.registry import Scorer, ScoringContext
from pai.pruning.sanity import reinitialize


class NtkSapScorer(Scorer):
    """Score |dJ/dc| at the current mask c, summed over `samples` fresh initializations, with

        J(c) = sum_x || f(x; theta * c) - f(x; (theta + epsilon * delta) * c) ||^2,

    the finite-difference estimate of the tangent kernel's trace (E_delta J ~ epsilon^2 tr NTK).
    For every sample theta is redrawn with the zoo's initialization (Kaiming normal, fan in;
    `pai.reinitialize`), delta ~ N(0, I) over the masked weights only, and the inputs x are
    `examples` draws of N(0, I) of the input shape: no data. Each round therefore sees new
    initializations, the paper's multi-sampling. BatchNorm normalizes both networks with the
    batch statistics of the unperturbed one, held fixed: as in the paper's code, running
    statistics are reset, one forward pass in training mode with momentum 1 stores the batch's,
    and both outputs are computed in eval mode.

    Defaults are the paper's: 20 rounds, R = 5 samples per round, epsilon = 0.01; 100 inputs is
    the authors' setting for CIFAR-10 (10 per class, one batch).
    """

    name = "ntk-sap"
    needs_data = False
    default_rounds = 20
    description = (
        "|dJ/dc|, J the output change under a weight perturbation, over fresh inits "
        "(Wang et al. 2023)"
    )

    def __init__(self, samples: int = 5, epsilon: float = 0.01, examples: int = 100):
        self.samples = samples
        self.epsilon = epsilon
        self.examples = examples

    def score(self, model: nn.Module, masks: Masks, context: ScoringContext) -> dict[str, Tensor]:
        if context.input_shape is None:
            raise PaiError("ntk-sap needs the input shape: pass input_shape=, e.g. (3, 32, 32)")
        saliency = {
            name: torch.zeros_like(mask, dtype=torch.float64) for name, mask in masks.items()
        }
        for _ in range(self.samples):
            seed = int(torch.randint(0, 2**62, (1,), generator=context.generator))
            network = _fresh(model, masks, seed)
            inputs, perturbation = self.draws(network, masks, context)
            for name, grad in self.mask_gradients(network, masks, inputs, perturbation).items():
                saliency[name] += grad.to(torch.float64)
        return {name: s.abs() for name, s in saliency.items()}

    def draws(
        self, network: nn.Module, masks: Masks, context: ScoringContext
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """The Gaussian inputs and the perturbation epsilon * delta of one sample."""
        dtype = network.get_parameter(next(iter(masks))).dtype
        shape = (self.examples, *context.input_shape)
        inputs = torch.randn(shape, generator=context.generator, dtype=dtype)
        perturbation = {
            name: self.epsilon * torch.randn(mask.shape, generator=context.generator, dtype=dtype)
            for name, mask in masks.items()
        }
        device = context.device
        return inputs.to(device), {name: p.to(device) for name, p in perturbation.items()}

    @staticmethod
    def mask_gradients(
        network: nn.Module, masks: Masks, inputs: Tensor, perturbation: dict[str, Tensor]
    ) -> dict[str, Tensor]:
        """dJ/dc at c = `masks` for the weights of `network` (see the class docstring).

        `network` is a private copy: its BatchNorm statistics and mode are overwritten.
        """
        theta = {name: network.get_parameter(name).detach() for name in masks}
        gates = {name: mask.to(theta[name].dtype).requires_grad_() for name, mask in masks.items()}
        batch_norms = [
            m for m in network.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
        ]
        for module in batch_norms:
            module.reset_running_stats()
            module.momentum = 1.0
        with torch.no_grad():
            network.train()
            functional_call(network, {n: theta[n] * gates[n] for n in masks}, (inputs,))
        network.eval()
        original = functional_call(network, {n: theta[n] * gates[n] for n in masks}, (inputs,))
        moved = {n: (theta[n] + perturbation[n]) * gates[n] for n in masks}
        perturbed = functional_call(network, moved, (inputs,))
        change = (original - perturbed).pow(2).sum()
        grads = torch.autograd.grad(change, list(gates.values()), materialize_grads=True)
        return dict(zip(gates, grads, strict=True))


def _fresh(model: nn.Module, masks: Masks, seed: int) -> nn.Module:
    """A private copy of `model` with the zoo's initialization drawn from `seed`."""
    network = reinitialize(model, masks, seed)
    for p in network.parameters():
        p.requires_grad_(False)
    return network
