"""What start-up built stays out of the garbage collector's full passes."""

from __future__ import annotations

import gc

from quarry.runtime import freeze_startup_heap


def test_the_startup_heap_is_frozen_and_later_objects_are_collected_as_before() -> None:
    built_at_start = [[i] for i in range(1000)]  # tracked container objects, alive throughout
    before = gc.get_freeze_count()
    try:
        freeze_startup_heap()
        assert gc.get_freeze_count() >= before + len(built_at_start)
        tracked = {id(obj) for obj in gc.get_objects()}  # frozen objects are not walked
        assert not any(id(obj) in tracked for obj in built_at_start)

        made_later: list[object] = []
        made_later.append(made_later)  # a cycle only the collector can free
        assert id(made_later) in {id(obj) for obj in gc.get_objects()}
    finally:
        gc.unfreeze()
