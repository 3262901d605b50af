"""The pruning layer's plain choices, in a module that imports no torch: the command line offers
them (and checks them) without loading the modules that use them."""

from __future__ import annotations

# The scopes every run understands without an allocator plugin (`pai.pruning.masks`).
SCOPES: tuple[str, ...] = ("global", "layerwise")
# Between an allocator's name and its argument in a scope: from-masks:FILE.
SEPARATOR = ":"
# How the compression grows over a pruner's rounds (`pai.pruning.driver.prune`).
SCHEDULES: tuple[str, ...] = ("exponential", "linear")
# What layer collapse means (`pai.pruning.collapse`): an empty layer, or input cut from output.
COLLAPSE_CRITERIA: tuple[str, ...] = ("layer", "path")
