"""The pure parts of sharing nodes between instances: relays, node fields, remote views
in the owner's snapshot, waiting jobs asked again. No Redis here (see test_cluster.py)."""

from __future__ import annotations

import orjson
import trio
import trio.testing

from harness import MemoryHarness
from trio_scheduler.cluster.directory import (
    departed_fields,
    node_fields,
    remote_node,
    standing,
)
from trio_scheduler.cluster.links import RemoteLink
from trio_scheduler.cluster.relay import Relays
from trio_scheduler.management.owner import RemoteNode, RemoteNodes
from trio_scheduler.management.snapshot import NodeStatus, NodeView, Pairing
from trio_scheduler.protocol.messages import JobErrorInfo, JobResult
from trio_scheduler.simulate.frames import audio_chunk_frame, one_way_init, register_frame


class FakeBus:
    def __init__(self) -> None:
        self.posts: list[tuple[str, dict]] = []

    def post(self, instance_id: str, message: dict) -> bool:
        self.posts.append((instance_id, message))
        return True


def result(job_id: str, **fields) -> JobResult:
    values = dict(job_id=job_id, attempt_id=1, node_id="n1", session_id="s-1",
                  utterance_index=0, success=True, trace_id="t", text_asr="hi")
    return JobResult(**{**values, **fields})


# -- relays ------------------------------------------------------------------------------


def test_a_relay_sends_the_nodes_answers_home_until_the_result():
    bus, link = FakeBus(), object()
    relays = Relays(bus, lifetime_s=35)
    relays.add("job-1", "inst-a", "n1", link, now=0)
    assert relays.forward("n2", result("job-1")) is False  # not the node it was sent to
    refusal = result("job-1", success=False,
                     error=JobErrorInfo("DUPLICATE_JOB_ID", "seen"))
    assert relays.forward("n1", refusal) is True  # not the end: the answer follows
    assert relays.forward("n1", result("job-1")) is True
    assert [(i, m["kind"], orjson.loads(m["frame"])["success"]) for i, m in bus.posts] == [
        ("inst-a", "from_node", False), ("inst-a", "from_node", True)]
    assert len(relays) == 0  # the result ended it
    assert relays.forward("n1", result("job-1")) is False


def test_a_node_lost_is_told_to_the_instance_of_each_job_it_carried():
    bus, link, newer = FakeBus(), object(), object()
    relays = Relays(bus, lifetime_s=35)
    relays.add("job-1", "inst-a", "n1", link, now=0)
    relays.add("job-2", "inst-b", "n1", link, now=0)
    relays.add("job-3", "inst-a", "n1", newer, now=0)  # a newer connection's job
    relays.drop("job-2")  # cancelled by its session
    relays.node_lost("n1", link)
    assert bus.posts == [("inst-a", {"kind": "node_lost", "node": "n1", "job": "job-1"})]
    assert len(relays) == 1


class RecordingLink:
    def __init__(self) -> None:
        self.sent: list[dict] = []

    def send(self, frame: str) -> bool:
        self.sent.append(orjson.loads(frame))
        return True


def test_relays_end_with_their_origin_or_their_lifetime():
    relays, link = Relays(FakeBus(), lifetime_s=10), RecordingLink()
    relays.add("job-1", "inst-a", "n1", link, now=0)
    relays.add("job-2", "inst-b", "n1", RecordingLink(), now=5)
    relays.instance_lost("inst-a")  # nobody will read job-1's answer: the node stops it
    assert [(f["type"], f["job_id"]) for f in link.sent] == [("job_cancel", "job-1")]
    assert len(relays) == 1
    relays.sweep(now=14.9)
    assert len(relays) == 1
    relays.sweep(now=15)
    assert len(relays) == 0


# -- node fields -------------------------------------------------------------------------


def view(status=NodeStatus.READY, **fields) -> NodeView:
    values = dict(node_id="n1", epoch=3, status=status, max_concurrent_jobs=2,
                  pools=frozenset({"zh:en", "zh:*"}), services=frozenset({"asr", "nmt"}),
                  accept_public_jobs=True, link=None)
    return NodeView(**{**values, **fields})


def link(instance, node_id, epoch) -> RemoteLink:
    return RemoteLink(instance, node_id, epoch, FakeBus())


def test_a_nodes_fields_give_the_same_view_on_another_instance():
    fields = node_fields(view(), "inst-b", ("123456", 10_000))
    parsed = remote_node("n1", fields, link, now=100.0, now_ms=4_000)
    assert parsed is not None
    remote, code, pairing = parsed
    assert remote == view(instance="inst-b")
    assert remote.link == RemoteLink("inst-b", "n1", 3, FakeBus())
    assert (code, pairing) == ("123456", Pairing("n1", 106.0))
    # An expired pairing is no pairing; nonsense fields are no node.
    assert remote_node("n1", fields, link, now=100.0, now_ms=10_000)[2] is None
    assert remote_node("n1", {**fields, "epoch": "x"}, link, now=0, now_ms=0) is None
    assert remote_node("n1", None, link, now=0, now_ms=0) is None


def test_a_departed_node_is_no_candidate_but_keeps_its_standing():
    fields = departed_fields(node_fields(view(NodeStatus.DRAINING), "inst-b", None))
    assert remote_node("n1", fields, link, now=0, now_ms=0) is None
    assert standing(fields) is NodeStatus.DRAINING
    assert standing(node_fields(view(), "inst-b", None)) is NodeStatus.READY
    assert standing(None) is None


# -- remote nodes in the owner's snapshot ------------------------------------------------


async def test_remote_nodes_join_and_leave_the_pools(nursery):
    h = await MemoryHarness.start(nursery)
    manager, publisher = h.scheduler.manager, h.scheduler.publisher
    n1 = RemoteNode(view(instance="inst-b", link=link("inst-b", "n1", 3)), "654321",
                    Pairing("n1", trio.current_time() + 60))
    n2 = RemoteNode(view(node_id="n2", instance="inst-b", link=link("inst-b", "n2", 1)))
    await manager.remote_nodes(RemoteNodes("inst-b", {"n1": n1, "n2": n2}, complete=True))
    snapshot = await publisher.wait_until(lambda s: {"n1", "n2"} <= s.pools.get("zh:en", set()))
    assert not snapshot.nodes["n1"].local and snapshot.paired_node("654321", 0) == "n1"
    # A partial update changes one node; a complete one drops those it does not list.
    await manager.remote_nodes(RemoteNodes("inst-b", {"n2": None}, complete=False))
    await publisher.wait_until(lambda s: "n2" not in s.nodes and "n1" in s.nodes)
    await manager.remote_nodes(RemoteNodes("inst-c", {}, complete=True))  # another's
    await manager.remote_nodes(RemoteNodes("inst-b", {}, complete=True))
    snapshot = await publisher.wait_until(lambda s: not s.nodes)
    assert snapshot.pools == {} and snapshot.paired_node("654321", 0) is None


async def test_a_node_registering_here_takes_over_from_its_instance(nursery):
    h = await MemoryHarness.start(nursery)
    evicted: list[tuple[str, str]] = []
    h.scheduler.manager.evict_remote = lambda instance, node: evicted.append((instance, node))
    ready_elsewhere = RemoteNode(view(node_id="node-X", instance="inst-b",
                                      link=link("inst-b", "node-X", 3)))
    await h.scheduler.manager.remote_nodes(
        RemoteNodes("inst-b", {"node-X": ready_elsewhere}, complete=True))
    node = h.node()
    await node.send(register_frame(node_id="node-X"))
    await node.recv_type("node_register_ack")
    # Ready at once (its standing elsewhere), local now, and its old socket is closed there.
    snapshot = await h.scheduler.publisher.wait_until(
        lambda s: "node-X" in s.nodes and s.nodes["node-X"].local)
    assert snapshot.nodes["node-X"].status is NodeStatus.READY
    assert evicted == [("inst-b", "node-X")]


# -- waiting jobs asked again ------------------------------------------------------------


async def test_waiting_jobs_are_poked_once_per_set_of_needs(nursery, autojump_clock):
    h = await MemoryHarness.start(nursery)
    node, node_id = await h.ready_node(max_concurrent_jobs=1)
    dispatcher = h.scheduler.dispatcher
    clients = [h.session() for _ in range(2)]
    for client in clients:
        session_id = await h.session_id_for(client, one_way_init("zh", "en"))
        for index in range(2):
            await client.send(audio_chunk_frame(session_id, index, is_final=True))
    await node.recv_type("job_assign")
    await trio.testing.wait_all_tasks_blocked()
    assert dispatcher.waiting == 3
    before = dispatcher.counters["waiter_wakeups"]
    assert dispatcher.poke_waiters() == 1  # the oldest of the three (same needs)
    await trio.testing.wait_all_tasks_blocked()
    # Its retry found the node still full: back to sleep, nothing passed on.
    assert dispatcher.counters["waiter_wakeups"] == before + 1
    assert dispatcher.waiting == 3
