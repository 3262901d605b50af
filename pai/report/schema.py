"""The names a results table speaks: method and variant names and the column order of a run.

Tables and figures are rebuilt from `runs.csv` by this package alone, so the names they group
and colour by live here, below the harness that writes them.
"""

from __future__ import annotations

import math

from pai.core.errors import PaiError

IMP = "imp"
TRANSFER = "transfer"
DENSE = "dense"
ORIGINAL = "original"
# The variants of a ticket that test what its method found (Frankle et al. 2021).
SANITY_CHECKS: tuple[str, ...] = ("shuffle", "reinit", "invert")
# Variants of a found ticket's weights under its mask: Zhou et al. 2019 (sign_constant,
# freeze_init) and Frankle, Schwab & Morcos 2020 (the rest, and noise:SCALE).
WEIGHT_VARIANTS: tuple[str, ...] = (
    "sign_constant",
    "freeze_init",
    "signs_from_init",
    "magnitudes_from_init",
    "sign_flip",
    "permute_global",
    "permute_layer",
    "permute_filter",
    "permute_same_sign",
)
NOISE = "noise"  # written noise:SCALE: Gaussian noise of SCALE times each layer's init std
VARIANTS: tuple[str, ...] = (*SANITY_CHECKS, *WEIGHT_VARIANTS, f"{NOISE}:SCALE")


def noise_scale(variant: str) -> float | None:
    """SCALE of a `noise:SCALE` variant name (None for any other name); PaiError for a SCALE
    that is not a finite number > 0."""
    prefix, colon, text = variant.partition(":")
    if prefix != NOISE or not colon:
        return None
    try:
        scale = float(text)
    except ValueError:
        scale = math.nan
    if not math.isfinite(scale) or scale <= 0:
        raise PaiError(f"variant {variant!r}: the noise scale must be a finite number > 0")
    return scale


def check_variant(variant: str) -> str:
    """`variant` in its canonical spelling (`noise:0.50` is `noise:0.5`); PaiError naming the
    allowed variants otherwise."""
    scale = noise_scale(variant)
    if scale is not None:
        return f"{NOISE}:{scale!r}"
    if variant not in VARIANTS[:-1]:
        raise PaiError(f"unknown variant {variant!r}; choose from: {', '.join(VARIANTS)}")
    return variant


# The columns every run records, in this order; extra columns follow them.
RUN_COLUMNS: tuple[str, ...] = (
    "method",
    "variant",
    "compression",
    "effective_compression",
    "seed",
    "test_accuracy",
    "best_test_accuracy",
    "collapsed",
    "search_epochs",
    "train_seconds",
)
EXTRA_COLUMNS: tuple[str, ...] = (
    "requested_compression",
    "kept",
    "total",
    "density",
    "collapsed_layers",
    "disconnected",
    "search_steps",
    "scoring_passes",
    "converged",
    "train_epochs",
    "train_steps",
    "test_loss",
    "initial_train_loss",
    "reused_training",
    "options",
    "run_dir",
    "untrained_test_accuracy",
)
