"""pai: pruning-at-initialization methods compared against iterative magnitude pruning.

The public API is re-exported here; submodules are imported on first use so that
`pai --help` and plugin discovery stay fast.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS: dict[str, str] = {
    # errors
    "PaiError": "pai.errors",
    "DataNotFoundError": "pai.errors",
    # durations
    "Step": "pai.steps",
    # datasets and models
    "DatasetSpec": "pai.datasets",
    "dataset_spec": "pai.datasets",
    "load_dataset": "pai.data",
    "Dataset": "pai.data",
    "Split": "pai.data",
    "DatasetStatus": "pai.data",
    "dataset_status": "pai.data",
    "class_balanced_subset": "pai.data",
    "random_crop_flip": "pai.data",
    "default_data_root": "pai.data",
    "resolve_data_root": "pai.data",
    "build_model": "pai.models",
    "available_models": "pai.models",
    "model_input_shape": "pai.models",
    # masks
    "Masks": "pai.masks",
    "keep_topk": "pai.masks",
    "kept_count": "pai.masks",
    "prunable_parameters": "pai.masks",
    # tickets
    "Ticket": "pai.tickets",
    "SearchCost": "pai.tickets",
    # scorers and pruning
    "Scorer": "pai.registry",
    "ScoringContext": "pai.registry",
    "available_scorers": "pai.registry",
    "get_scorer": "pai.registry",
    "register_scorer": "pai.registry",
    "rescan_scorers": "pai.registry",
    "prune": "pai.pruning",
    "compute_scores": "pai.pruning",
    "shuffle_within_layers": "pai.sanity",
    "inverted": "pai.sanity",
    "reinitialize": "pai.sanity",
    # collapse and effective sparsity
    "layer_collapse": "pai.collapse",
    "effective_masks": "pai.collapse",
    "effective_compression": "pai.collapse",
    "critical_compression": "pai.collapse",
    "CriticalCompression": "pai.collapse",
    # iterative magnitude pruning
    "ImpConfig": "pai.imp",
    "ImpResult": "pai.imp",
    "ImpLevel": "pai.imp",
    "PruningPlan": "pai.imp",
    "imp_schedule": "pai.imp",
    "pruning_plan": "pai.imp",
    "prune_by_magnitude": "pai.imp",
    "imp_loop": "pai.imp",
    "run_imp": "pai.imp",
    # the comparison harness
    "CompareConfig": "pai.compare",
    "run_comparison": "pai.compare",
    "find_ticket": "pai.compare",
    "plan_runs": "pai.compare",
    "summarize": "pai.tables",
    "plot_accuracy_vs_compression": "pai.plots",
    # training
    "TrainConfig": "pai.training",
    "train": "pai.training",
    "evaluate": "pai.training",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'pai' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
