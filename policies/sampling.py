"""``sample`` and ``randbelow``: ``rng.sample(population, k)`` and ``rng.randrange(n)``, cheaper.

Why: the ``subset`` filter draws a dozen candidates from a 64-backend fleet for every
request, and ``random.Random.sample`` pays a Python call (``_randbelow``) per draw plus
its own set-up; at 64 backends that sampling was the largest single cost of routing.
This is CPython's own algorithm for a small population (the "pool" branch: a partial
Fisher-Yates over a copy, each index drawn by rejection from ``getrandbits`` of the
index's bit length) written as one loop, so it consumes exactly the same random bits
and returns exactly the same list; decisions (and every later draw of the injected
rng) are unchanged. Anything else - an ``rng`` of another type (a subclass may draw
differently), a population above the pool threshold, an invalid ``k`` - goes to
``rng.sample`` itself. ``tests/unit/test_sampling.py`` checks the equality over many
seeds and sizes, so a Python release that changes ``sample`` fails there first.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from math import ceil, log
from typing import TypeVar

T = TypeVar("T")

_SMALL_SET = 21  # random.Random.sample's "size of a small set minus size of an empty list"


def pool_threshold(k: int) -> int:
    """Largest population that ``random.Random.sample`` draws ``k`` from by its pool branch."""
    return _SMALL_SET + (4 ** ceil(log(k * 3, 4)) if k > 5 else 0)


# pool_threshold(k) for the small k routing draws (a log and a ceil per call otherwise).
_POOL_THRESHOLDS: tuple[int, ...] = tuple(pool_threshold(k) for k in range(65))


def sample(rng: random.Random, population: Sequence[T], k: int) -> list[T]:
    """Exactly ``rng.sample(population, k)`` (same result, same state of ``rng`` afterwards)."""
    n = len(population)
    if type(rng) is not random.Random or not 0 <= k <= n:
        return rng.sample(population, k)
    if n > (_POOL_THRESHOLDS[k] if k < len(_POOL_THRESHOLDS) else pool_threshold(k)):
        return rng.sample(population, k)
    return _draw(rng, list(population), k)


def sample_consuming(rng: random.Random, pool: list[T], k: int) -> list[T]:
    """``sample(rng, pool, k)`` for a list the caller gives up: drawn in place, without a copy.

    The same result and the same state of ``rng`` afterwards; ``pool`` is left in an unspecified order
    (its first ``len(pool) - k`` items hold the undrawn ones). Why: the subset filter builds the row
    list it samples from for this draw only, and ``sample``'s copy of it was pure overhead."""
    n = len(pool)
    if type(rng) is not random.Random or not 0 <= k <= n:
        return rng.sample(pool, k)
    if n > (_POOL_THRESHOLDS[k] if k < len(_POOL_THRESHOLDS) else pool_threshold(k)):
        return rng.sample(pool, k)
    return _draw(rng, pool, k)


def _draw(rng: random.Random, pool: list[T], k: int) -> list[T]:
    """``random.Random.sample``'s pool branch over ``pool`` (which it permutes): k draws by rejection."""
    n = len(pool)
    getrandbits = rng.getrandbits
    result: list[T] = []  # appended to directly: a bound list.append is a generic call from compiled code
    for left in range(n, n - k, -1):  # draw an index below `left`, then fill its hole with the last
        bits = left.bit_length()
        j = getrandbits(bits)
        while j >= left:
            j = getrandbits(bits)
        result.append(pool[j])
        pool[j] = pool[left - 1]
    return result


def randbelow(rng: random.Random, n: int) -> int:
    """Exactly ``rng.randrange(n)`` (same result, same state of ``rng`` afterwards).

    Why: the pipeline draws the lead among the backends tied for the best score on every request
    (all of them for a policy without scorers, such as round robin), and ``randrange`` is two
    Python-level calls (``randrange``, ``_randbelow``) around one ``getrandbits``. This is
    ``Random._randbelow_with_getrandbits``, which ``randrange(n)`` calls for ``n > 0``; another
    type of ``rng`` or ``n <= 0`` (an error) goes to ``rng.randrange`` itself.
    """
    if type(rng) is not random.Random or n <= 0:
        return rng.randrange(n)
    getrandbits = rng.getrandbits
    bits = n.bit_length()
    r = getrandbits(bits)
    while r >= n:
        r = getrandbits(bits)
    return r
