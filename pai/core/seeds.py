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
| IMP criterion     | 2^22 + 1000 s + level        | `criterion_seed(s, level)`: `random` criterion |
| supermask         | 2^23 + s                     | `supermask_seed(s)`: scores and mask samples   |
| stability copies  | 2^24 + 2 s + copy (0 or 1)   | `stability_order(s, copy)`: the copies' orders |

Every variant of a ticket (`pai.search.ablations`: shuffle, reinit, the permutations, sign
flips and noise) draws from the variant's `ablation_seed`, each from a fresh generator, so
adding a variant changes no other.

The ablation seeds lie far above every model seed in use, so a re-initialized control never
reuses another run's initialization. Their rules predate this table; they stay as they are
because committed results were drawn with them.
"""

from __future__ import annotations

from pai.core.errors import PaiError

SANITY_SEED_BASE = 1 << 21
CONTROL_SEED_BASE = 1 << 20
CRITERION_SEED_BASE = 1 << 22
SUPERMASK_SEED_BASE = 1 << 23
STABILITY_SEED_BASE = 1 << 24
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


def criterion_seed(seed: int, level: int) -> int:
    """The seed of a mask criterion's draws (`random`) at `level` of the IMP run of `seed`."""
    return CRITERION_SEED_BASE + 1000 * seed + level


def supermask_seed(seed: int) -> int:
    """The seed of a supermask search's initial scores and Bernoulli mask samples."""
    return SUPERMASK_SEED_BASE + seed


def stability_order(seed: int, copy: int) -> int:
    """The data order of copy 0 or 1 of a linear-mode-connectivity pair of seed `seed`: two
    orders that differ from each other and from the run the copies branch off."""
    if copy not in (0, 1):
        raise PaiError(f"a stability pair has copies 0 and 1, got {copy!r}")
    return STABILITY_SEED_BASE + 2 * seed + copy
