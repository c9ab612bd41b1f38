from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from state.waiting_room import WaitingRoom


def test_strict_priority_then_fifo() -> None:
    room: WaitingRoom[str] = WaitingRoom(3, 10)
    for name, rank in [("s1", 2), ("n1", 1), ("c1", 0), ("n2", 1), ("c2", 0)]:
        room.push(name, rank, deadline_s=100.0, now_s=0.0, work_tokens=10.0)
    order = []
    while (w := room.pop_dispatchable(lambda _: True)) is not None:
        order.append(w.item)
    assert order == ["c1", "c2", "n1", "n2", "s1"]
    assert len(room) == 0


def test_ranks_from_lifo_from_rank_on_are_served_newest_first() -> None:
    room: WaitingRoom[str] = WaitingRoom(3, 10, lifo_from_rank=1)
    for name, rank in [("n1", 1), ("c1", 0), ("s1", 2), ("n2", 1), ("c2", 0), ("s2", 2)]:
        room.push(name, rank, deadline_s=100.0, now_s=0.0, work_tokens=10.0)
    order = []
    while (w := room.pop_dispatchable(lambda _: True)) is not None:
        order.append(w.item)
    # The most important rank stays FIFO; below it the newest request goes first.
    assert order == ["c1", "c2", "n2", "n1", "s2", "s1"]


def test_full_room_evicts_newest_of_least_important_class_only() -> None:
    room: WaitingRoom[str] = WaitingRoom(3, 3)
    for name, rank in [("s1", 2), ("s2", 2), ("n1", 1)]:
        room.push(name, rank, 100.0, 0.0, 1.0)
    result = room.push("c1", 0, 100.0, 0.0, 1.0)
    assert result.accepted
    assert [w.item for w in result.evicted] == ["s2"]
    assert not room.push("s3", 2, 100.0, 0.0, 1.0).accepted  # nothing less important to evict
    assert room.can_accept(0)
    assert not room.can_accept(2)


def test_remove_and_expire() -> None:
    room: WaitingRoom[str] = WaitingRoom(2, 10)
    a = room.push("a", 0, 5.0, 0.0, 1.0).waiter
    room.push("b", 1, 1.0, 0.0, 2.0)
    assert a is not None
    assert room.remove(a)
    assert not room.remove(a)
    assert room.ahead_of(1) == (1, 2.0)
    assert [w.item for w in room.expire(1.0)] == ["b"]
    assert len(room) == 0
    assert room.next_deadline_s() is None


def test_blocked_model_does_not_block_others() -> None:
    room: WaitingRoom[str] = WaitingRoom(1, 10)
    for item in ["m1-a", "m2-a", "m1-b"]:
        room.push(item, 0, 100.0, 0.0, 1.0)
    w = room.pop_dispatchable(lambda item: item.startswith("m2"))
    assert w is not None
    assert w.item == "m2-a"
    assert room.ahead_of(0) == (2, 2.0)


@given(st.lists(st.tuples(st.integers(0, 2), st.booleans(), st.floats(0, 10)), max_size=200))
def test_counts_stay_consistent_under_any_operations(ops: list[tuple[int, bool, float]]) -> None:
    room: WaitingRoom[int] = WaitingRoom(3, 20)
    live: dict[int, object] = {}
    for i, (rank, remove_one, deadline) in enumerate(ops):
        result = room.push(i, rank, deadline, 0.0, 1.0)
        if result.waiter is not None:
            live[i] = result.waiter
        for ev in result.evicted:
            live.pop(ev.item, None)
        if remove_one and live:
            key = next(iter(live))
            room.remove(live.pop(key))  # type: ignore[arg-type]
        assert len(room) == len(live) <= 20
        assert room.ahead_of(2)[0] == len(room)
    for w in room.expire(5.0):
        live.pop(w.item, None)
    assert len(room) == len(live)
