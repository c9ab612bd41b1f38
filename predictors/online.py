"""Online refinement of the output-length quantiles from the lengths the proxy actually observes.

Rule (all in ``z = log(1 + tokens)``), with two levels of keys:

* level 1, per normalised model: ``r1 = z_obs - mu_base(x)``;
* level 2, per ``(route, model, tenant)``: ``r2 = z_obs - mu_base(x) - c1``.

Each level keeps a running mean of its residual with step size
``max(1/(n+1), min_rate)`` (an exact mean for the first ``1/min_rate``
observations, then an exponential average with that memory, so drift is
followed) and applies it shrunk towards zero, ``c = mean * n / (n + prior_n)``,
so a handful of odd answers does not swing a key. The corrected location is
``mu_base + c1 + c2``; p50 and p90 move with it.

The p90 additionally gets a per-key offset ``d90`` learned by stochastic
quantile tracking: ``d90 += quantile_rate * (1[z_obs > z90] - 0.1)``, which
drives the key's P90 coverage to 90% when its spread differs from the
training data's.

Which outcomes teach: status 200, not cancelled, no error. Answers cut off
by ``max_tokens`` are censored (the model wanted at least that many tokens):
they only ever raise the location, never lower it.

Memory is bounded: each level is an LRU (``max_keys``, ``max_models``) ordered
by last observation; reads on the request path do not reorder it. Parameters
and defaults: ``prior_n=10``, ``min_rate=1/200``, ``quantile_rate=0.05``,
``max_keys=10_000``, ``max_models=1_000``. A tenant whose answers run 3x longer
than the model predicts is corrected to within ~10% of its median after ~100
requests (``tests/unit/test_online_length.py``).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Final, TypeVar

K = TypeVar("K", bound=Hashable)
LevelKey = tuple[str, str, str]
_MISS_TARGET = 0.1


@dataclass(slots=True)
class _KeyState:
    n: float = 0.0
    mean: float = 0.0
    d90: float = 0.0
    # Forgetful sums of f * e and f * f (f: feature-weight score, e: what the means left), for the gain.
    sum_fe: float = 0.0
    sum_ff: float = 0.0


@dataclass(frozen=True, slots=True)
class OnlineParams:
    prior_n: float = 10.0
    min_rate: float = 1.0 / 200.0
    quantile_rate: float = 0.05
    max_keys: int = 10_000
    max_models: int = 1_000
    ranking_gain_prior: float | None = 0.5

    def __post_init__(self) -> None:
        if self.prior_n < 0 or not 0 < self.min_rate <= 1 or self.quantile_rate < 0:
            raise ValueError("need prior_n >= 0, 0 < min_rate <= 1, quantile_rate >= 0")
        if self.ranking_gain_prior is not None and self.ranking_gain_prior <= 0:
            raise ValueError("ranking_gain_prior must be > 0 (None: always apply the feature weights fully)")
        if self.max_keys < 1 or self.max_models < 1:
            raise ValueError("max_keys and max_models must be >= 1")


class Correction:
    """What to add to the base log-space location and to the p90 offset; ``n`` = key observations.

    ``ranking_gain`` in [0, 1]: how much of the online feature weights' score to apply for this key.
    A plain read-only class, not a ``NamedTuple``: two are built per request (predict and observe),
    and a named tuple's ``__new__`` stays interpreted code in the compiled build (docs/compiled.md).
    """

    __slots__ = ("location", "n_key", "n_model", "p90_offset", "ranking_gain")

    def __init__(
        self, location: float, p90_offset: float, n_model: float, n_key: float, ranking_gain: float = 1.0
    ) -> None:
        self.location: Final = location
        self.p90_offset: Final = p90_offset
        self.n_model: Final = n_model
        self.n_key: Final = n_key
        self.ranking_gain: Final = ranking_gain

    def __repr__(self) -> str:
        return (
            f"Correction(location={self.location!r}, p90_offset={self.p90_offset!r}, "
            f"n_model={self.n_model!r}, n_key={self.n_key!r}, ranking_gain={self.ranking_gain!r})"
        )


NO_CORRECTION = Correction(0.0, 0.0, 0.0, 0.0)


def _touch(table: OrderedDict[K, _KeyState], key: K, cap: int) -> _KeyState:
    """The state of ``key``, created if absent, moved to the most-recent end; evicts the oldest."""
    state = table.get(key)
    if state is None:
        state = table[key] = _KeyState()
        if len(table) > cap:
            table.popitem(last=False)
    else:
        table.move_to_end(key)
    return state


class OnlineLengthCorrector:
    """Bounded per-model and per-(route, model, tenant) residual corrections."""

    __slots__ = ("_keys", "_models", "_params")

    def __init__(self, params: OnlineParams | None = None) -> None:
        self._params = params or OnlineParams()
        self._models: OrderedDict[str, _KeyState] = OrderedDict()
        self._keys: OrderedDict[LevelKey, _KeyState] = OrderedDict()

    def __len__(self) -> int:
        return len(self._keys)

    @property
    def n_models(self) -> int:
        return len(self._models)

    def rebase(self) -> None:
        """After a refit learned from the same outcomes was swapped in (``predictors.refit``).

        Forgets the per-model levels (the refit has the model's level), every key's p90 offset (the
        refit's ``k90`` is recalibrated) and ranking-gain sums (the feature weights are reset too).
        Keeps each (route, model, tenant) key's mean offset from its model: route and tenant are not
        features of the refit, so a tenant whose answers run long would otherwise be learned again.
        """
        self._models.clear()
        for state in self._keys.values():
            state.d90 = 0.0
            state.sum_fe = 0.0
            state.sum_ff = 0.0

    def key_offsets(self) -> dict[LevelKey, tuple[float, float]]:
        """Each (route, model, tenant) key's (observations, mean offset): what ``rebase`` keeps.

        Taken when a refit job starts (~0.2 us per key, at most ``max_keys``), so that after its swap
        ``restore_key_offsets`` can return the keys to that point before the outcomes that arrived
        during the job are replayed: otherwise those would count twice in the keys' means.
        """
        return {key: (state.n, state.mean) for key, state in self._keys.items()}

    def restore_key_offsets(self, offsets: dict[LevelKey, tuple[float, float]]) -> None:
        """Set every key's mean offset to ``offsets`` (a key absent from it starts again at none)."""
        for key, state in self._keys.items():
            state.n, state.mean = offsets.get(key, (0.0, 0.0))

    def _shrunk(self, state: _KeyState) -> float:
        return state.mean * state.n / (state.n + self._params.prior_n)

    def correction(self, route: str, model: str, tenant: str) -> Correction:
        """The current correction for a request (read-only: the LRU order is not touched)."""
        model_state = self._models.get(model)
        key_state = self._keys.get((route, model, tenant))
        if model_state is None and key_state is None:
            return NO_CORRECTION
        # ``_shrunk`` inlined: this runs once per request on the event loop.
        prior_n = self._params.prior_n
        location = n_model = n_key = d90 = 0.0
        gain = 1.0
        if model_state is not None:
            n_model = model_state.n
            location = model_state.mean * n_model / (n_model + prior_n)
        if key_state is not None:
            n_key = key_state.n
            location += key_state.mean * n_key / (n_key + prior_n)
            d90 = key_state.d90
            gain = self._gain(key_state)
        return Correction(location, d90, n_model, n_key, gain)

    def _gain(self, state: _KeyState) -> float:
        """Least-squares scale of the feature score for this key's residual, shrunk toward 1, in [0, 1].

        ``(sum f e + g) / (sum f^2 + g)`` with prior mass ``g``: 1 while the weights are untested on
        the key, falling toward 0 where their score does not predict what the means leave (e.g. a
        tenant whose prompts the offline model already ranks as well as a linear model can).
        """
        prior = self._params.ranking_gain_prior
        if prior is None:
            return 1.0
        gain = (state.sum_fe + prior) / (state.sum_ff + prior)
        return 0.0 if gain < 0.0 else 1.0 if gain > 1.0 else gain

    def _step(self, state: _KeyState, residual: float, censored: bool) -> None:
        if censored and residual <= state.mean:
            return
        state.n += 1.0
        rate = 1.0 / state.n
        min_rate = self._params.min_rate
        if min_rate > rate:  # max(1 / n, min_rate), without the builtin call (once per outcome and level)
            rate = min_rate
        state.mean += rate * (residual - state.mean)

    def observe(
        self,
        route: str,
        model: str,
        tenant: str,
        *,
        z_observed: float,
        mu_base: float,
        z90_base_offset: float,
        censored: bool = False,
        ranking_score: float = 0.0,
    ) -> None:
        """Learn from one finished request.

        ``mu_base`` is the model's uncorrected log location for the request and
        ``z90_base_offset`` its ``k90 * scale`` (so ``z90 = mu + offset``).
        ``ranking_score`` is the online feature weights' score ``f`` for this
        request (``predictors.online_features``), before this outcome: the key
        learns how much of it to apply (``ranking_gain``), and the applied part
        moves the p90 the quantile tracker judges, not the residual the means learn.
        """
        model_state = _touch(self._models, model, self._params.max_models)
        key_state = _touch(self._keys, (route, model, tenant), self._params.max_keys)
        corrected = mu_base + self._shrunk(model_state) + self._shrunk(key_state)
        z90 = corrected + self._gain(key_state) * ranking_score + z90_base_offset + key_state.d90
        if ranking_score != 0.0 and (not censored or z_observed > corrected + ranking_score):
            keep = 1.0 - self._params.min_rate
            left = z_observed - corrected
            key_state.sum_fe = keep * key_state.sum_fe + ranking_score * left
            key_state.sum_ff = keep * key_state.sum_ff + ranking_score * ranking_score
        if not censored or z_observed > z90:
            miss = 1.0 if z_observed > z90 else 0.0
            key_state.d90 += self._params.quantile_rate * (miss - _MISS_TARGET)
        self._step(model_state, z_observed - mu_base, censored)
        self._step(key_state, z_observed - mu_base - self._shrunk(model_state), censored)
