"""The cyclic garbage collector, set for a process that holds many long-lived objects.

CPython runs a young-generation collection every 700 container allocations. The daemon
allocates a few hundred containers per watch event (the decoded object, its projection) and
keeps only the projection, freed by reference counting; almost nothing it makes is cyclic
garbage. At the default, projecting 100,000 Jobs and Pods ran 1,429 collections and took
17-26 % more CPU than with a threshold of 50,000 (20 collections), at the same heap
(docs/performance.md, "Cold start"). The older generations keep their defaults, so what
cyclic garbage there is (an asyncio future holding its exception's traceback) is still
collected within a few million allocations.
"""

from __future__ import annotations

import gc

YOUNG_THRESHOLD = 50_000
"""Container allocations (less deallocations) between young-generation collections."""


def tune_gc() -> None:
    """Raise the young generation's threshold; the process's, once, at start."""
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, middle, old)
