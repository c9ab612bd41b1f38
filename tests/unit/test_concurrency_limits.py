from __future__ import annotations

from core.admission_config import ConcurrencyLimitConfig
from state.concurrency_limits import ConcurrencyLimits, Gradient2Limit, VegasLimit


def feed(limiter: Gradient2Limit | VegasLimit, ttft_ms: float, n: int, saturate: bool = True) -> None:
    for _ in range(n):
        limiter.on_sample(ttft_ms, in_flight=limiter.limit if saturate else 0)


def test_gradient2_grows_while_ttft_is_flat_and_shrinks_when_it_inflates() -> None:
    cfg = ConcurrencyLimitConfig(initial=16, min=4, max=256)
    limiter = Gradient2Limit(cfg, 16)
    feed(limiter, 100.0, 400)
    grown = limiter.limit
    assert grown > 16
    feed(limiter, 1000.0, 200)  # TTFT x10: congestion
    assert limiter.limit < grown
    assert limiter.limit >= cfg.min


def test_gradient2_holds_when_app_limited() -> None:
    limiter = Gradient2Limit(ConcurrencyLimitConfig(initial=32, min=4, max=256), 32)
    feed(limiter, 100.0, 500, saturate=False)
    assert limiter.limit == 32


def test_vegas_grows_then_backs_off() -> None:
    limiter = VegasLimit(ConcurrencyLimitConfig(algorithm="vegas", initial=16, min=4, max=256), 16)
    feed(limiter, 100.0, 300)
    grown = limiter.limit
    assert grown > 16
    feed(limiter, 400.0, 300)
    assert limiter.limit < grown


def test_drop_backs_off_multiplicatively_and_respects_min() -> None:
    limiter = Gradient2Limit(ConcurrencyLimitConfig(initial=100, min=4, max=256), 100)
    limiter.on_drop()
    assert limiter.limit == 90
    for _ in range(100):
        limiter.on_drop()
    assert limiter.limit == 4


def test_garbage_samples_are_ignored() -> None:
    limiter = Gradient2Limit(ConcurrencyLimitConfig(initial=16), 16)
    for bad in (float("nan"), float("inf"), -5.0):
        for _ in range(50):
            limiter.on_sample(bad, 16)
    assert limiter.limit == 16


def test_backend_max_concurrency_caps_adaptive_and_fixed_limits() -> None:
    limits = ConcurrencyLimits(ConcurrencyLimitConfig(initial=32), [("a", 8), ("b", None)])
    assert limits.limits() == {"a": 8, "b": 32}
    for _ in range(1000):
        limits.on_sample("a", 50.0, 8)
    assert limits.limit("a") == 8
    fixed = ConcurrencyLimits(ConcurrencyLimitConfig(algorithm="fixed", initial=5), [("a", 3), ("b", None)])
    assert fixed.limits() == {"a": 3, "b": 5}
    none = ConcurrencyLimits(ConcurrencyLimitConfig(algorithm="none"), [("a", 3)])
    assert none.limit("a") is None


def test_gradient2_with_a_ttft_target_steers_to_it_not_to_the_first_ttft_seen() -> None:
    cfg = ConcurrencyLimitConfig(initial=16, min=4, max=1000, ttft_target_ms=500.0)
    limiter = Gradient2Limit(cfg, 16)
    feed(limiter, 50.0, 100)
    early = limiter.limit
    feed(limiter, 400.0, 300)  # 8x the baseline: the ratio rule alone would halve the limit
    assert limiter.limit > early
    before = limiter.limit
    feed(limiter, 1000.0, 10)  # one window at twice the target
    assert before * 0.85 <= limiter.limit < before
    feed(limiter, 2000.0, 300)
    assert limiter.limit < before / 4  # x0.9 per window while 4x over the target


def test_gradient2_growth_per_window_is_bounded_under_a_target() -> None:
    cfg = ConcurrencyLimitConfig(initial=100, min=4, max=10_000, queue_size=4, ttft_target_ms=500.0)
    limiter = Gradient2Limit(cfg, 100)
    feed(limiter, 1.0, 10)  # 500x under the target: still at most x1.25 + queue_size per window
    assert limiter.limit == int(100 * 1.25 + 4)


def test_current_limits_follow_every_sample_and_drop() -> None:
    # Admission reads ``current`` (plain ints) instead of asking each limiter; it must never lag.
    limits = ConcurrencyLimits(ConcurrencyLimitConfig(initial=16, min=4, max=256), [("a", None), ("b", 64)])
    seen = []
    for step in range(400):
        ttft_ms = 100.0 if step < 250 else 2_000.0  # flat TTFT (grow), then congestion (shrink)
        limits.on_sample("a", ttft_ms, limits.limit("a") or 0)
        if step % 37 == 0:
            limits.on_drop("b")
        assert limits.current == limits.limits()
        seen.append(limits.current["a"])
    assert max(seen) > 16  # it grew ...
    assert seen[-1] < max(seen)  # ... and shrank, and `current` followed both ways
    unlimited = ConcurrencyLimits(ConcurrencyLimitConfig(algorithm="none"), [("a", 8)])
    assert unlimited.current == {} and unlimited.limit("a") is None


def test_gradient2_does_not_cut_again_while_the_backend_is_over_its_limit() -> None:
    # A backend over its limit for a whole window gets nothing new: that window's TTFTs belong to
    # requests sent before the last cut, so they must not cut again (one cut per congestion episode).
    cfg = ConcurrencyLimitConfig(initial=100, min=4, max=1000, ttft_target_ms=500.0)
    limiter = Gradient2Limit(cfg, 100)
    for _ in range(10):
        limiter.on_sample(2000.0, in_flight=100)  # at its limit: a normal congested window
    cut = limiter.limit
    assert cut < 100
    for _ in range(50):
        limiter.on_sample(2000.0, in_flight=cut + 40)  # still draining the streams it holds
    assert limiter.limit == cut
    for _ in range(10):
        limiter.on_sample(2000.0, in_flight=cut)  # back at the limit and still slow: cut again
    assert limiter.limit < cut
    lower = limiter.limit
    for _ in range(10):
        limiter.on_sample(100.0, in_flight=lower + 40)  # over the limit but fast: growth is not held
    assert limiter.limit > lower
