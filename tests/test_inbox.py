"""The session inbox's order: the client's departure, then node events, then client frames."""

from __future__ import annotations

import trio
import trio.testing

from trio_scheduler.sessions.inbox import NUDGE, SessionInbox


async def test_node_events_overtake_client_frames():
    inbox = SessionInbox(client_size=8, node_size=8)
    await inbox.put_client("chunk-1")
    await inbox.put_client("chunk-2")
    assert inbox.put_node("result")
    assert [await inbox.next() for _ in range(3)] == ["result", "chunk-1", "chunk-2"]


async def test_client_departure_overtakes_everything_queued():
    inbox = SessionInbox(client_size=8, node_size=8)
    await inbox.put_client("chunk")
    inbox.put_node("result")
    inbox.client_gone("gone")
    assert await inbox.next() == "gone"
    assert await inbox.next() == "gone"  # it stays the answer: the session stops on it


async def test_client_departure_wakes_a_waiting_get(nursery):
    inbox = SessionInbox(client_size=1, node_size=1)
    got = []

    async def take(*, task_status=trio.TASK_STATUS_IGNORED):
        task_status.started()
        got.append(await inbox.next())

    await nursery.start(take)
    inbox.client_gone("gone")
    await trio.testing.wait_all_tasks_blocked()
    assert got == ["gone"]


async def test_full_node_queue_refuses_without_waiting():
    inbox = SessionInbox(client_size=1, node_size=2)
    assert inbox.put_node("a") and inbox.put_node("b")
    assert not inbox.put_node("c")
    assert inbox.dropped_node_events == 1


async def test_a_wait_with_nothing_to_take_ends_at_its_deadline(autojump_clock):
    inbox = SessionInbox(client_size=1, node_size=1)
    with trio.move_on_at(trio.current_time() + 5) as scope:
        await inbox.next()
    assert scope.cancelled_caught and trio.current_time() == 5


async def test_client_frames_are_bounded_in_bytes(nursery):
    """The reader waits while the queued frames' bytes would pass the budget."""
    inbox = SessionInbox(client_size=8, node_size=1, client_bytes=100)
    await inbox.put_client("first", 60)
    done = trio.Event()

    async def put_second():
        await inbox.put_client("second", 60)
        done.set()

    nursery.start_soon(put_second)
    await trio.testing.wait_all_tasks_blocked()
    assert not done.is_set()  # 120 bytes would be queued
    assert await inbox.next() == "first"
    await done.wait()
    assert await inbox.next() == "second"


async def test_a_frame_larger_than_the_budget_goes_alone():
    inbox = SessionInbox(client_size=8, node_size=1, client_bytes=100)
    await inbox.put_client("huge", 500)
    assert await inbox.next() == "huge"


async def test_a_frame_goes_in_without_waiting_while_there_is_room():
    inbox = SessionInbox(client_size=2, node_size=1, client_bytes=100)
    with trio.testing.assert_no_checkpoints():
        assert inbox.put_client_nowait("a", 60)
        assert not inbox.put_client_nowait("b", 60)  # 120 bytes would be queued
        assert inbox.put_client_nowait("c", 40)
        assert not inbox.put_client_nowait("d", 0)  # two frames: the channel is full
    assert [await inbox.next(), await inbox.next()] == ["a", "c"]


async def test_a_session_behind_takes_several_events_per_turn():
    inbox = SessionInbox(client_size=8, node_size=8, events_per_turn=3)
    for n in range(5):
        assert inbox.put_client_nowait(n)
    with trio.testing.assert_no_checkpoints():
        assert [await inbox.next(), await inbox.next()] == [0, 1]
    with trio.testing.assert_checkpoints():
        assert await inbox.next() == 2  # the third in a row lets others run
    with trio.testing.assert_no_checkpoints():
        assert await inbox.next() == 3


async def test_a_closed_inbox_frees_a_waiting_reader_and_drops_what_follows(nursery):
    """Once the session has ended, the socket's reader must not wait for room that will
    never come: it has a close handshake to finish."""
    inbox = SessionInbox(client_size=1, node_size=1)
    await inbox.put_client("queued")
    done = trio.Event()

    async def put_second():
        await inbox.put_client("second")
        done.set()

    nursery.start_soon(put_second)
    await trio.testing.wait_all_tasks_blocked()
    assert not done.is_set()
    inbox.close()
    with trio.fail_after(5):
        await done.wait()
    assert inbox.put_client_nowait("third")  # taken, and dropped
    assert await inbox.next() == "queued"
    with trio.move_on_at(trio.current_time()) as scope:
        await inbox.next()  # "third" was dropped: nothing left
    assert scope.cancelled_caught


async def test_a_cancelled_wait_takes_nothing():
    """The session waits under a cancel scope whose deadline it moves: a deadline that
    passes just as events are there must leave them queued, in order."""
    inbox = SessionInbox(client_size=4, node_size=4, events_per_turn=1)
    await inbox.put_client("chunk")
    inbox.put_node("result")
    with trio.CancelScope() as scope:
        scope.cancel()
        await inbox.next()
    assert scope.cancelled_caught
    assert [await inbox.next(), await inbox.next()] == ["result", "chunk"]


async def test_two_waiting_for_room_are_both_let_in(nursery):
    """Each waiter must be woken by room or by the end, whoever waited first."""
    inbox = SessionInbox(client_size=1, node_size=1)
    await inbox.put_client("queued")
    put: list[str] = []

    async def put_one(name):
        await inbox.put_client(name)
        put.append(name)

    nursery.start_soon(put_one, "a")
    await trio.testing.wait_all_tasks_blocked()
    nursery.start_soon(put_one, "b")
    await trio.testing.wait_all_tasks_blocked()
    with trio.fail_after(5):
        assert await inbox.next() == "queued"
        second = await inbox.next()
        third = await inbox.next()
    assert {second, third} == {"a", "b"}
    assert sorted(put) == ["a", "b"]


async def test_closing_frees_every_waiter(nursery):
    inbox = SessionInbox(client_size=1, node_size=1)
    await inbox.put_client("queued")
    done = []

    async def put_one(name):
        await inbox.put_client(name)
        done.append(name)

    for name in ("a", "b"):
        nursery.start_soon(put_one, name)
        await trio.testing.wait_all_tasks_blocked()
    inbox.close()
    with trio.fail_after(5):
        while len(done) < 2:
            await trio.testing.wait_all_tasks_blocked()
    assert sorted(done) == ["a", "b"]


async def _parked_taker(nursery, inbox, got):
    """A session task stand-in waiting in next(); returns once it is parked there."""

    async def take():
        while True:
            got.append(await inbox.next())

    nursery.start_soon(take)
    await trio.testing.wait_all_tasks_blocked()


async def test_a_turn_is_given_only_while_the_session_waits_with_nothing_queued(nursery):
    inbox = SessionInbox(client_size=8, node_size=8)
    assert not inbox.take_turn()  # nobody waits in next(): the session task is busy
    got = []
    await _parked_taker(nursery, inbox, got)
    assert inbox.take_turn()
    assert not inbox.take_turn()  # one at a time
    inbox.give_back_turn()
    await trio.testing.wait_all_tasks_blocked()
    assert got == []  # nothing arrived: the session task was not woken for the frame
    inbox.put_node("result")
    assert not inbox.take_turn()  # something is queued: the frame queues behind it
    await trio.testing.wait_all_tasks_blocked()
    assert got == ["result"]
    inbox.close()
    assert not inbox.take_turn()


async def test_nothing_is_handed_out_while_a_frame_is_handled_in_place(nursery):
    inbox = SessionInbox(client_size=8, node_size=8)
    got = []
    await _parked_taker(nursery, inbox, got)
    assert inbox.take_turn()
    inbox.put_node("result")  # arrives meanwhile: wakes the session task, which waits on
    await inbox.put_client("chunk")
    await trio.testing.wait_all_tasks_blocked()
    assert got == []
    inbox.give_back_turn()
    await trio.testing.wait_all_tasks_blocked()
    assert got == ["result", "chunk"]


async def test_a_nudge_wakes_the_session_with_nothing_queued(nursery):
    inbox = SessionInbox(client_size=8, node_size=8)
    got = []
    await _parked_taker(nursery, inbox, got)
    assert inbox.take_turn()
    inbox.give_back_turn(nudge=True)
    await trio.testing.wait_all_tasks_blocked()
    assert got == [NUDGE]


async def test_free_waits_for_the_turn_to_come_back(nursery):
    inbox = SessionInbox(client_size=8, node_size=8)
    got = []
    await _parked_taker(nursery, inbox, got)
    assert inbox.take_turn()
    freed = []

    async def wait_free():
        await inbox.free()
        freed.append(True)

    nursery.start_soon(wait_free)
    nursery.start_soon(wait_free)  # every waiter, not only the last
    await trio.testing.wait_all_tasks_blocked()
    assert freed == []
    inbox.give_back_turn()
    await trio.testing.wait_all_tasks_blocked()
    assert freed == [True, True]
