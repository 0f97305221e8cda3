"""The daemon's process raises the young generation's GC threshold and keeps the others."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from watcher.kit.gctune import YOUNG_THRESHOLD, tune_gc


@pytest.fixture
def restored_thresholds() -> Iterator[tuple[int, int, int]]:
    before = gc.get_threshold()
    gc.set_threshold(700, 10, 10)
    try:
        yield gc.get_threshold()
    finally:
        gc.set_threshold(*before)


def test_young_generation_collects_less_often_and_the_old_ones_as_before(
    restored_thresholds: tuple[int, int, int],
) -> None:
    tune_gc()
    young, middle, old = gc.get_threshold()
    assert young == YOUNG_THRESHOLD > restored_thresholds[0]
    assert (middle, old) == restored_thresholds[1:]
    assert gc.isenabled()
