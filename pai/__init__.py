"""pai: pruning-at-initialization methods compared against iterative magnitude pruning.

The public API is re-exported here; submodules are imported on first use so that
`pai --help` and plugin discovery stay fast.
"""

from __future__ import annotations

import importlib
from typing import Any

from pai.core.version import __version__

_EXPORTS: dict[str, str] = {
    # errors
    "PaiError": "pai.core.errors",
    "DataNotFoundError": "pai.core.errors",
    # durations
    "Step": "pai.core.steps",
    # datasets and models
    "DatasetSpec": "pai.data.specs",
    "dataset_spec": "pai.data.specs",
    "load_dataset": "pai.data.loading",
    "Dataset": "pai.data.loading",
    "Split": "pai.data.loading",
    "DatasetStatus": "pai.data.loading",
    "dataset_status": "pai.data.loading",
    "class_balanced_subset": "pai.data.loading",
    "random_crop_flip": "pai.data.loading",
    "default_data_root": "pai.data.loading",
    "resolve_data_root": "pai.data.loading",
    "build_model": "pai.models",
    "available_models": "pai.models",
    "model_input_shape": "pai.models",
    # masks
    "Masks": "pai.pruning.masks",
    "keep_topk": "pai.pruning.masks",
    "kept_count": "pai.pruning.masks",
    "prunable_parameters": "pai.pruning.masks",
    # tickets
    "Ticket": "pai.search.ticket",
    "SearchCost": "pai.search.ticket",
    # scorers and pruning
    "Scorer": "pai.pruning.registry",
    "ScoringContext": "pai.pruning.registry",
    "available_scorers": "pai.pruning.registry",
    "get_scorer": "pai.pruning.registry",
    "register_scorer": "pai.pruning.registry",
    "rescan_scorers": "pai.pruning.registry",
    "prune": "pai.pruning.driver",
    "compute_scores": "pai.pruning.driver",
    "check_scorer": "pai.testing",
    "shuffle_within_layers": "pai.pruning.sanity",
    "inverted": "pai.pruning.sanity",
    "reinitialize": "pai.pruning.sanity",
    # collapse and effective sparsity
    "layer_collapse": "pai.pruning.collapse",
    "effective_masks": "pai.pruning.collapse",
    "effective_compression": "pai.pruning.collapse",
    "critical_compression": "pai.pruning.collapse",
    "CriticalCompression": "pai.pruning.collapse",
    # iterative magnitude pruning
    "ImpConfig": "pai.search.imp",
    "ImpResult": "pai.search.imp",
    "ImpLevel": "pai.search.imp",
    "PruningPlan": "pai.pruning.levels",
    "imp_schedule": "pai.pruning.levels",
    "pruning_plan": "pai.pruning.levels",
    "prune_by_magnitude": "pai.pruning.levels",
    "prune_by_criterion": "pai.pruning.levels",
    "Criterion": "pai.pruning.criteria",
    "available_criteria": "pai.pruning.criteria",
    "get_criterion": "pai.pruning.criteria",
    "register_criterion": "pai.pruning.criteria",
    "imp_loop": "pai.search.imp",
    "run_imp": "pai.search.imp",
    # the comparison harness
    "CompareConfig": "pai.experiments.compare",
    "run_comparison": "pai.experiments.compare",
    "find_ticket": "pai.experiments.compare",
    "plan_runs": "pai.experiments.compare",
    "summarize": "pai.report.tables",
    # linear mode connectivity
    "StabilityConfig": "pai.experiments.stability",
    "run_stability": "pai.experiments.stability",
    "plot_accuracy_vs_compression": "pai.report.plots",
    # training
    "TrainConfig": "pai.training.config",
    "train": "pai.training.loop",
    "evaluate": "pai.training.loop",
    "train_many": "pai.training.stacked",
    "default_stack_size": "pai.training.stacked",
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
