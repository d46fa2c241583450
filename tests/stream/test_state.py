"""Keyed sliding-window state, in memory and in Redis (where it survives a restart)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import pytest

from nearline.worker.state import (
    MemoryWindowState,
    RedisWindowState,
    WindowState,
    WindowStats,
    WindowUpdate,
)

REDIS_URL = "redis://127.0.0.1:6379/0"
WINDOW_MS = 60_000


@pytest.fixture
async def make_state(
    request: pytest.FixtureRequest, prefix: str
) -> AsyncIterator[Callable[[], WindowState]]:
    made: list[WindowState] = []
    kind: str = request.param

    def make() -> WindowState:
        state: WindowState
        if kind == "memory":
            state = made[0] if made else MemoryWindowState(WINDOW_MS)
        else:
            state = RedisWindowState.from_url(REDIS_URL, f"{prefix}:card:", WINDOW_MS)
        made.append(state)
        return state

    yield make
    for state in made:
        if isinstance(state, RedisWindowState):
            await state.clear()
        await state.aclose()


both = pytest.mark.parametrize("make_state", ["memory", "redis"], indirect=True)


def update(key: str, n: int, at_s: float, value: float) -> WindowUpdate:
    return WindowUpdate(key, f"id-{key}-{n}", int(at_s * 1000), value)


@both
async def test_count_and_sum_cover_only_the_window(make_state: Callable[[], WindowState]) -> None:
    state = make_state()

    stats = await state.add(
        [
            update("card-1", 1, 0, 10.0),
            update("card-1", 2, 30, 20.5),
            update("card-2", 1, 31, 99.0),
            update("card-1", 3, 61, 5.0),  # 61 s: the event at 0 s has left the window
        ]
    )

    assert stats == [
        WindowStats(1, 10.0),
        WindowStats(2, 30.5),
        WindowStats(1, 99.0),
        WindowStats(2, 25.5),
    ]
    assert stats[3].mean == pytest.approx(12.75)


@both
async def test_an_event_seen_twice_is_counted_once(make_state: Callable[[], WindowState]) -> None:
    state = make_state()
    first = await state.add([update("card-1", 1, 0, 10.0), update("card-1", 2, 1, 5.0)])

    replayed = await state.add([update("card-1", 2, 1, 5.0)])

    assert first[-1] == WindowStats(2, 15.0)
    assert replayed == [WindowStats(2, 15.0)]


@both
async def test_a_late_event_older_than_the_window_is_not_counted(
    make_state: Callable[[], WindowState],
) -> None:
    state = make_state()
    await state.add([update("card-1", 1, 100, 1.0)])

    late = await state.add([update("card-1", 2, 10, 50.0)])

    assert late == [WindowStats(1, 1.0)]


@pytest.mark.parametrize("make_state", ["redis"], indirect=True)
async def test_redis_state_survives_a_worker_restart(
    make_state: Callable[[], WindowState],
) -> None:
    before = make_state()
    await before.add([update("card-1", 1, 0, 10.0), update("card-1", 2, 1, 20.0)])
    await before.aclose()

    after = make_state()  # a new process would connect like this
    stats = await after.add([update("card-1", 3, 2, 30.0)])

    assert stats == [WindowStats(3, 60.0)]
