"""The serving process's collector settings, and that a benchmark can undo them."""

from __future__ import annotations

import gc

from sluice.heap import GEN0_THRESHOLD, restore, settle_after_startup


def test_settle_freezes_start_up_objects_and_restore_undoes_it() -> None:
    before = gc.get_threshold()
    start_up_object = {"config": [1, 2, 3]}
    previous = settle_after_startup()
    try:
        assert previous == before
        assert gc.get_threshold()[0] == GEN0_THRESHOLD
        assert gc.get_freeze_count() > 0
        assert not any(obj is start_up_object for obj in gc.get_objects())  # frozen: out of the generations
    finally:
        restore(previous)
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0
