"""How long to wait before re-creating a failed Job: capped exponential backoff with jitter.

The delay before retry ``n`` (n = 1 for the first retry of a failure class) is

    raw(n) = min(cap_s, base_s * factor ** (n - 1))

and jitter spreads it so that Jobs that failed together (one lost node, one preemption wave)
do not all come back in the same second:

    "full"   uniform in [0, raw]              (AWS "full jitter"; best spread, may be ~0)
    "equal"  uniform in [raw / 2, raw]        (keeps at least half the delay)
    "none"   exactly raw                      (predictable; for tests and single Jobs)

Pure: no clock, no global random state (the caller passes a ``random.Random``).
"""

from __future__ import annotations

import math
import random
from typing import Final, Literal, get_args

__all__ = [
    "DEFAULT_BASE_S",
    "DEFAULT_CAP_S",
    "DEFAULT_FACTOR",
    "DEFAULT_JITTER",
    "JITTER_MODES",
    "Jitter",
    "compute_delay",
    "raw_delay",
]

Jitter = Literal["full", "equal", "none"]
JITTER_MODES: Final[tuple[Jitter, ...]] = get_args(Jitter)

DEFAULT_BASE_S: Final = 30.0
"""First retry after about 30 s: long enough for the scheduler to notice a lost or drained node
and for a preempting workload to land, short enough that a transient blip costs little. The
Job controller's own pod backoff starts at 10 s, which is too eager for a whole new Job."""

DEFAULT_FACTOR: Final = 2.0
"""Doubling, as the Job controller, Kueue and Temporal do: 30 s, 1 m, 2 m, 4 m, 8 m, ..."""

DEFAULT_CAP_S: Final = 15 * 60.0
"""No single wait longer than 15 min: capacity problems (spot droughts, preemption) usually
clear within that, and a longer silence makes the Job look lost to the person waiting on it.
The total time a Job may keep retrying is a separate budget (``RetryPolicy.total_budget_s``)."""

DEFAULT_JITTER: Final[Jitter] = "full"
"""Full jitter spreads a burst of failures best (failure-signals.md section 3)."""


def raw_delay(attempt: int, *, base_s: float, factor: float, cap_s: float) -> float:
    """The delay before retry ``attempt`` without jitter: ``min(cap_s, base_s * factor**(n-1))``.

    Never overflows: the exponent is clamped to the smallest one that already reaches the cap,
    so ``attempt=10**9`` costs the same as ``attempt=30`` and returns ``cap_s``.

    Raises ``ValueError`` for ``attempt < 1``, negative delays, a factor below 1, or
    non-finite numbers: those are programming errors, the config and annotation parsers reject
    such values before they get here.
    """
    _check(attempt, base_s=base_s, factor=factor, cap_s=cap_s)
    if base_s == 0.0 or cap_s == 0.0:
        return 0.0
    if base_s >= cap_s:
        return cap_s
    exponent = attempt - 1
    if factor > 1.0:
        # Smallest exponent e with base * factor**e >= cap; beyond it the result is the cap.
        # +1 absorbs floating-point rounding in the logarithms.
        max_exponent = math.ceil(math.log(cap_s / base_s) / math.log(factor)) + 1
        exponent = min(exponent, max_exponent)
    else:
        exponent = 0
    return min(cap_s, base_s * factor**exponent)


def compute_delay(
    attempt: int,
    *,
    base_s: float,
    factor: float,
    cap_s: float,
    jitter: Jitter,
    rng: random.Random,
) -> float:
    """Seconds to wait before retry ``attempt`` (1 = first retry), jitter applied.

    The result is always within ``[0, cap_s]``; with ``"equal"`` it is at least half the raw
    delay. ``rng`` is consumed only when jitter is on.
    """
    if jitter not in JITTER_MODES:
        raise ValueError(f"jitter must be one of {', '.join(JITTER_MODES)}, got {jitter!r}")
    delay = raw_delay(attempt, base_s=base_s, factor=factor, cap_s=cap_s)
    if jitter == "full":
        return min(delay, rng.uniform(0.0, delay))
    if jitter == "equal":
        return min(delay, delay / 2 + rng.uniform(0.0, delay / 2))
    return delay


def _check(attempt: int, *, base_s: float, factor: float, cap_s: float) -> None:
    if attempt < 1:
        raise ValueError(f"attempt must be >= 1, got {attempt}")
    for name, value in (("base_s", base_s), ("cap_s", cap_s)):
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    if not math.isfinite(factor) or factor < 1.0:
        raise ValueError(f"factor must be a finite number >= 1, got {factor!r}")
