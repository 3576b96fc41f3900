"""The Redis bridge thread gets the GIL quickly from a busy loop, and parses in C."""

from __future__ import annotations

import sys

import fakeredis
import redis.utils

from trio_scheduler.store.redis import SWITCH_INTERVAL_S, open_redis_store


async def test_the_switch_interval_is_short_while_a_redis_store_is_open():
    before = sys.getswitchinterval()
    client = fakeredis.FakeRedis(decode_responses=True)
    async with open_redis_store("redis://fakeredis", client=client):
        async with open_redis_store("redis://fakeredis", client=client):
            assert sys.getswitchinterval() <= SWITCH_INTERVAL_S
        assert sys.getswitchinterval() <= SWITCH_INTERVAL_S  # one store is still open
    assert sys.getswitchinterval() == before


def test_replies_are_parsed_by_hiredis():
    assert redis.utils.HIREDIS_AVAILABLE
