"""Iterative SNIP (de Jorge et al. 2021, "Progressive Skeletonization"): SNIP re-scored in rounds."""

from __future__ import annotations

from scorers.snip import SnipScorer


class IterativeSnipScorer(SnipScorer):
    """SNIP's |w * dL/dw| on the masked network, recomputed every round of pai's exponential
    schedule; pruned weights score |0 * g| = 0 and stay pruned. 60 rounds, as in the authors'
    published runs (num_steps 60)."""

    name = "iter-snip"
    default_rounds = 60
    description = "|w * dL/dw| re-scored on the masked network each round (de Jorge et al. 2021)"
