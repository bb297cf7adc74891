"""The sets of seqinv's phantoms, named in one place, and the check that keeps test sets for measuring.

- test: SynthSeg label maps `TEST_MAPS` (17, 18) and the ICBM phantom seed `HELD_OUT_SEED`; with the real
  scans of the real-scan benchmark (training/realbench/run.py) they only measure.
- development: maps `DEVELOPMENT_MAPS` (15, 16) and `DEVELOPMENT_SEED`: they choose checkpoints,
  parameters and stages.
- fitting: maps `FIT_MAPS` (1-14) and the training seeds of training/phantom_cache.py: they train.

Anything that chooses or trains calls `refuse_test` with the maps and seeds it was given.
"""

from __future__ import annotations

from collections.abc import Iterable

from seqinv.errors import ParameterError
from seqinv.physics.anatomy import DEVELOPMENT_MAPS, FIT_MAPS, TEST_MAPS, TRAINING_MAPS
from seqinv.physics.phantom import DEVELOPMENT_SEED, HELD_OUT_SEED

__all__ = [
    "DEVELOPMENT_MAPS",
    "DEVELOPMENT_SEED",
    "FIT_MAPS",
    "HELD_OUT_SEED",
    "TEST_MAPS",
    "TEST_SEEDS",
    "TRAINING_MAPS",
    "refuse_test",
]

#: Phantom seeds that only measure.
TEST_SEEDS = (HELD_OUT_SEED,)


def refuse_test(purpose: str, *, maps: Iterable[int] = (), seeds: Iterable[int] = ()) -> None:
    """Raise `ParameterError` when label maps `maps` or phantom seeds `seeds` hold a test set: `purpose`
    (e.g. "choose checkpoints") chooses or trains, so its figures would no longer be held out."""
    test_maps = sorted(set(maps) & set(TEST_MAPS))
    test_seeds = sorted(set(seeds) & set(TEST_SEEDS))
    if test_maps:
        raise ParameterError(
            f"label maps {test_maps} are test maps: never {purpose} on them "
            f"(development maps: {list(DEVELOPMENT_MAPS)}; see seqinv/physics/sets.py)"
        )
    if test_seeds:
        raise ParameterError(
            f"phantom seed {test_seeds[0]} is the test seed: never {purpose} on it "
            f"(development seed: {DEVELOPMENT_SEED}; see seqinv/physics/sets.py)"
        )
