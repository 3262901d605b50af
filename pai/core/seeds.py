"""Every random stream a run's seed names, in one table.

A comparison's "seed s" is not one random number generator but several independent streams,
each a `torch.Generator` (or the zoo's initializer) seeded by a fixed function of s. They are
kept apart so that adding a method, a variant or a level never shifts the draws of another:

| stream            | seed                         | drawn by                                       |
|-------------------|------------------------------|------------------------------------------------|
| model init        | s                            | `pai.models.build_model(..., seed=s)`          |
| data order        | s (`TrainConfig.seed`)       | the training loop's batch permutations         |
| scoring subset    | s                            | `pai.data.loading.scoring_batches`             |
| scorer draws      | s                            | `pai.pruning.driver.prune(..., seed=s)`        |
| training subset   | 0, for every s               | `pai.data.loading.training_subset`             |
| validation split  | 0, for every s               | `pai.data.loading.load_dataset(validation=n)`  |
| sanity variant    | 2^21 + s                     | `ablation_seed(s)`: compare's shuffle / reinit |
| IMP control       | 2^20 + 1000 s + level        | `ablation_seed(s, level)`: IMP's controls      |
| toy-sum control   | 2^20 + s                     | `benchmarks/toy_sum.py`'s re-initialization    |

The ablation seeds lie far above every model seed in use, so a re-initialized control never
reuses another run's initialization. Their rules predate this table; they stay as they are
because committed results were drawn with them.
"""

from __future__ import annotations

SANITY_SEED_BASE = 1 << 21
CONTROL_SEED_BASE = 1 << 20
TRAINING_SUBSET_SEED = 0
VALIDATION_SEED = 0


def model_init(seed: int) -> int:
    """The seed of the zoo's initializer for a run of seed `seed`."""
    return seed


def data_order(seed: int) -> int:
    """The seed of the training loop's batch order (`TrainConfig.seed`)."""
    return seed


def scoring_subset(seed: int) -> int:
    """The seed of the class-balanced batch that data-driven scorers score on."""
    return seed


def ablation_seed(seed: int, level: int | None = None) -> int:
    """The seed of an ablation's permutation or re-initialization.

    Without `level`: a comparison's sanity variant of a ticket of seed `seed`. With `level`: an
    IMP control at that level of the IMP run whose model seed is `seed`.
    """
    if level is None:
        return SANITY_SEED_BASE + seed
    return CONTROL_SEED_BASE + 1000 * seed + level
