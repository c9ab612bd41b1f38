"""``policies.sampling.sample`` must be ``random.Random.sample`` exactly: same picks, same rng state after.

Routing decisions (and the replay recording) depend on every draw of the injected rng,
so the fast path may only ever be a faster way to compute the very same thing.
"""

from __future__ import annotations

import random

import pytest

from policies.sampling import pool_threshold, randbelow, sample


def test_same_picks_and_rng_state_as_random_sample_over_sizes_and_seeds() -> None:
    for seed in range(25):
        fast, reference = random.Random(seed), random.Random(seed)
        for n in range(90):
            population = [f"b{i}" for i in range(n)]
            for k in (0, 1, 2, 3, 5, 6, 12, 15, 16, 30, n):
                if k > n:
                    continue
                assert sample(fast, population, k) == reference.sample(population, k), (seed, n, k)
        assert fast.getstate() == reference.getstate()


def test_tuples_large_populations_and_subclasses_fall_back_to_the_same_answer() -> None:
    class Counting(random.Random):
        draws = 0

        def getrandbits(self, k: int, /) -> int:
            Counting.draws += 1
            return super().getrandbits(k)

    population = tuple(range(200))
    assert pool_threshold(16) < 200
    assert sample(random.Random(3), population, 16) == random.Random(3).sample(population, 16)
    assert sample(Counting(4), population[:64], 16) == Counting(4).sample(population[:64], 16)
    assert Counting.draws > 0


def test_invalid_k_raises_as_random_sample_does() -> None:
    with pytest.raises(ValueError, match="Sample larger than population or is negative"):
        sample(random.Random(1), [1, 2, 3], 4)
    with pytest.raises(ValueError, match="Sample larger than population or is negative"):
        sample(random.Random(1), [1, 2, 3], -1)


def test_randbelow_is_randrange_exactly_and_falls_back_for_other_rngs_and_bad_bounds() -> None:
    for seed in range(25):
        fast, reference = random.Random(seed), random.Random(seed)
        for n in (*range(1, 70), 127, 128, 129, 1_000, 2**40 + 7):
            assert randbelow(fast, n) == reference.randrange(n), (seed, n)
        assert fast.getstate() == reference.getstate()

    class Shifted(random.Random):
        def randrange(self, *args: int) -> int:  # type: ignore[override]
            return super().randrange(*args) + 1

    assert randbelow(Shifted(5), 3) == Shifted(5).randrange(3)
    with pytest.raises(ValueError, match="empty range"):
        randbelow(random.Random(0), 0)


def test_sample_consuming_is_sample_without_the_copy() -> None:
    from policies.sampling import sample_consuming

    for seed in range(10):
        fast, reference = random.Random(seed), random.Random(seed)
        for n in range(0, 90, 3):
            for k in (0, 1, 2, 12, 15, 16, n):
                if k > n:
                    continue
                pool = list(range(n))
                assert sample_consuming(fast, pool, k) == reference.sample(range(n), k), (seed, n, k)
        assert fast.getstate() == reference.getstate()
    with pytest.raises(ValueError, match="larger than population"):
        sample_consuming(random.Random(0), [1, 2], 3)
