"""Images of one dataset made to fit a model shaped for another, without resampling.

For scoring a model whose own dataset is absent (a CIFAR-shaped model scored on Fashion-MNIST):
only padding with black and repeating a single channel are done, so every original pixel value
reaches the model unchanged.
"""

from __future__ import annotations

import torch
from torch import Tensor

from pai.core.errors import PaiError
from pai.data.specs import DatasetSpec


def fit_to_input_shape(
    x: Tensor, source: DatasetSpec, shape: tuple[int, ...]
) -> tuple[Tensor, str]:
    """Images of `source` (normalized) made to fit `shape` = (C, H, W), and how it was done.

    Smaller images are centered on a black border (the normalized value of a black pixel,
    as LeCun et al. padded 28x28 MNIST to 32x32) and a single channel is repeated C times.
    """
    channels, height, width = shape
    n, c, h, w = x.shape
    if (c != channels and c != 1) or h > height or w > width:
        raise PaiError(
            f"images of {source.name} ({c}x{h}x{w}) cannot be fitted to the model's input "
            f"{channels}x{height}x{width}: only padding and repeating one channel are done"
        )
    steps = []
    if (h, w) != (height, width):
        black = torch.tensor(
            [-m / s for m, s in zip(source.mean, source.std, strict=True)], dtype=x.dtype
        ).to(x.device)
        canvas = black.reshape(1, c, 1, 1).expand(n, c, height, width).clone()
        top, left = (height - h) // 2, (width - w) // 2
        canvas[:, :, top : top + h, left : left + w] = x
        x = canvas
        steps.append(f"padded {h}x{w} to {height}x{width} with black")
    if c != channels:
        x = x.expand(n, channels, height, width).contiguous()
        steps.append(f"channel repeated {channels} times")
    return x, ", ".join(steps)
