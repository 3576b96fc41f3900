"""The key schema (store/keys.py): readable names, and hash tags that keep together in one
Redis Cluster slot the keys a script touches together.

The slots here are redis-py's computation of Redis's (CRC16 of the tag); the store contract
suite checks the same on a real cluster with CLUSTER KEYSLOT.
"""

from __future__ import annotations

import pytest
from redis.crc import key_slot

from trio_scheduler.store.keys import Keys

ODD_IDS = ["node-1DDFF3B5", "inst-0a1b2c3d", "n1", "", "}odd", "a{b}c", "{", "x}"]


def slot(key: str) -> int:
    return key_slot(key.encode())


def test_key_names_read_as_what_they_hold() -> None:
    keys = Keys("ts:")
    assert keys.node("node-1DDFF3B5") == "ts:{node:node-1DDFF3B5}"
    assert keys.reservations("node-1DDFF3B5") == "ts:{node:node-1DDFF3B5}:res"
    assert keys.instances() == "ts:{instances}"
    assert keys.instance("inst-0a1b2c3d") == "ts:{instances}:inst-0a1b2c3d"
    assert keys.inbox("inst-0a1b2c3d") == "ts:{inbox:inst-0a1b2c3d}"


@pytest.mark.parametrize("some_id", ODD_IDS)
def test_a_nodes_keys_share_a_slot_whatever_its_id(some_id: str) -> None:
    keys = Keys()
    assert slot(keys.reservations(some_id)) == slot(keys.node(some_id))


@pytest.mark.parametrize("some_id", ODD_IDS)
def test_the_instance_registry_shares_one_slot(some_id: str) -> None:
    keys = Keys()
    assert slot(keys.instance(some_id)) == slot(keys.instances())


def test_keys_touched_alone_spread_over_slots() -> None:
    keys = Keys()
    ids = [f"node-{i:08X}" for i in range(100)]
    assert len({slot(keys.node(node_id)) for node_id in ids}) > 90
    assert len({slot(keys.inbox(node_id)) for node_id in ids}) > 90
