"""compute_delay: the capped exponential curve, jitter bounds, overflow guard, bad input."""

from __future__ import annotations

import math
import random
import time

import pytest

from watcher.core.backoff import (
    DEFAULT_BASE_S,
    DEFAULT_CAP_S,
    DEFAULT_FACTOR,
    JITTER_MODES,
    Jitter,
    compute_delay,
    raw_delay,
)

SEEDS = range(500)


@pytest.mark.parametrize(
    ("attempt", "base_s", "factor", "cap_s", "expected"),
    [
        pytest.param(1, 30.0, 2.0, 900.0, 30.0, id="first-retry-waits-base"),
        pytest.param(2, 30.0, 2.0, 900.0, 60.0, id="second-retry-doubles"),
        pytest.param(5, 30.0, 2.0, 900.0, 480.0, id="fifth-retry-16x"),
        pytest.param(6, 30.0, 2.0, 900.0, 900.0, id="sixth-retry-hits-cap"),
        pytest.param(7, 30.0, 2.0, 900.0, 900.0, id="stays-at-cap"),
        pytest.param(3, 10.0, 3.0, 1000.0, 90.0, id="factor-3"),
        pytest.param(4, 10.0, 1.5, 1000.0, 33.75, id="fractional-factor"),
        pytest.param(9, 45.0, 1.0, 900.0, 45.0, id="factor-1-is-constant"),
        pytest.param(3, 0.0, 2.0, 900.0, 0.0, id="zero-base-never-waits"),
        pytest.param(3, 30.0, 2.0, 0.0, 0.0, id="zero-cap-never-waits"),
        pytest.param(1, 1200.0, 2.0, 900.0, 900.0, id="base-above-cap-is-capped"),
        pytest.param(40, 30.0, 1.1, 900.0, 900.0, id="small-factor-reaches-cap-eventually"),
        pytest.param(50, 1.0, 1.1, 1e9, 1.1**49, id="small-factor-not-clamped-early"),
        pytest.param(10**9, 30.0, 2.0, 900.0, 900.0, id="huge-attempt-no-overflow"),
        pytest.param(10**18, 1.0, 10.0, 86400.0, 86400.0, id="huge-attempt-huge-factor"),
        pytest.param(10**6, 30.0, 1.0000001, 900.0, 30 * math.e**0.1, id="factor-barely-above-1"),
        pytest.param(10**9, 30.0, 1.0000001, 900.0, 900.0, id="factor-barely-above-1-capped"),
    ],
)
def test_raw_delay_follows_capped_exponential(
    attempt: int, base_s: float, factor: float, cap_s: float, expected: float
) -> None:
    assert raw_delay(attempt, base_s=base_s, factor=factor, cap_s=cap_s) == pytest.approx(expected)


def test_huge_attempt_is_fast() -> None:
    # Given an attempt number far beyond any float exponent
    start = time.perf_counter()
    # When the delay is computed with every jitter mode
    delays = [
        compute_delay(10**100, base_s=30, factor=2, cap_s=900, jitter=mode, rng=random.Random(1))
        for mode in JITTER_MODES
    ]
    # Then it neither overflows nor takes noticeable time
    assert all(0 <= d <= 900 for d in delays)
    assert time.perf_counter() - start < 0.1


@pytest.mark.parametrize(
    "attempt", [pytest.param(n, id=f"attempt-{n}") for n in (1, 2, 3, 4, 6, 10, 50)]
)
def test_no_jitter_is_exactly_the_raw_delay(attempt: int) -> None:
    kwargs = {"base_s": 30.0, "factor": 2.0, "cap_s": 900.0}
    rng = random.Random(7)
    state = rng.getstate()
    assert compute_delay(attempt, jitter="none", rng=rng, **kwargs) == raw_delay(attempt, **kwargs)
    assert rng.getstate() == state, "jitter=none must not consume randomness"


@pytest.mark.parametrize(
    ("jitter", "low_fraction"),
    [pytest.param("full", 0.0, id="full-0-to-raw"), pytest.param("equal", 0.5, id="equal-half")],
)
@pytest.mark.parametrize(
    ("attempt", "base_s", "factor", "cap_s"),
    [
        pytest.param(1, 30.0, 2.0, 900.0, id="first"),
        pytest.param(4, 30.0, 2.0, 900.0, id="middle"),
        pytest.param(12, 30.0, 2.0, 900.0, id="capped"),
        pytest.param(3, 0.5, 3.0, 10.0, id="sub-second"),
    ],
)
def test_jitter_stays_within_bounds_over_many_seeds(
    jitter: Jitter, low_fraction: float, attempt: int, base_s: float, factor: float, cap_s: float
) -> None:
    raw = raw_delay(attempt, base_s=base_s, factor=factor, cap_s=cap_s)
    delays = [
        compute_delay(
            attempt,
            base_s=base_s,
            factor=factor,
            cap_s=cap_s,
            jitter=jitter,
            rng=random.Random(seed),
        )
        for seed in SEEDS
    ]
    assert min(delays) >= raw * low_fraction
    assert max(delays) <= raw <= cap_s
    # And it really spreads: the seeds cover most of the allowed range.
    span = raw * (1 - low_fraction)
    assert min(delays) < raw * low_fraction + 0.05 * span
    assert max(delays) > raw - 0.05 * span


@pytest.mark.parametrize("jitter", [pytest.param(m, id=m) for m in JITTER_MODES])
def test_cap_is_honoured_for_every_attempt(jitter: Jitter) -> None:
    rng = random.Random(42)
    for attempt in range(1, 200):
        delay = compute_delay(
            attempt,
            base_s=DEFAULT_BASE_S,
            factor=DEFAULT_FACTOR,
            cap_s=DEFAULT_CAP_S,
            jitter=jitter,
            rng=rng,
        )
        assert 0.0 <= delay <= DEFAULT_CAP_S, attempt


def test_raw_delay_never_decreases_with_attempts() -> None:
    delays = [raw_delay(n, base_s=7.0, factor=1.7, cap_s=5000.0) for n in range(1, 60)]
    assert delays == sorted(delays)
    assert delays[-1] == 5000.0


def test_same_seed_same_delay() -> None:
    def delay(seed: int) -> float:
        return compute_delay(
            3, base_s=30, factor=2, cap_s=900, jitter="full", rng=random.Random(seed)
        )

    assert delay(5) == delay(5)
    assert delay(5) != delay(6)


def test_defaults_give_the_documented_curve() -> None:
    curve = [
        raw_delay(n, base_s=DEFAULT_BASE_S, factor=DEFAULT_FACTOR, cap_s=DEFAULT_CAP_S)
        for n in range(1, 8)
    ]
    assert curve == [30.0, 60.0, 120.0, 240.0, 480.0, 900.0, 900.0]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        pytest.param({"attempt": 0}, "attempt must be >= 1", id="attempt-zero"),
        pytest.param({"attempt": -3}, "attempt must be >= 1", id="attempt-negative"),
        pytest.param({"factor": 0.5}, "factor must be", id="factor-below-1"),
        pytest.param({"factor": math.inf}, "factor must be", id="factor-infinite"),
        pytest.param({"base_s": -1.0}, "base_s must be", id="base-negative"),
        pytest.param({"base_s": math.nan}, "base_s must be", id="base-nan"),
        pytest.param({"cap_s": math.inf}, "cap_s must be", id="cap-infinite"),
        pytest.param({"jitter": "FULL"}, "jitter must be one of", id="jitter-unknown"),
    ],
)
def test_programming_errors_raise_value_error(kwargs: dict[str, object], message: str) -> None:
    args: dict[str, object] = {
        "attempt": 1,
        "base_s": 30.0,
        "factor": 2.0,
        "cap_s": 900.0,
        "jitter": "full",
        "rng": random.Random(0),
    }
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        compute_delay(**args)  # type: ignore[arg-type]
