"""pytest plugin: the main thread carries the running test's name.

pytest-timeout's thread method ends a stuck run with every thread's stack, headed by the
thread's name, but does not say which test was running; with ``-q`` nothing else does.
"""

from __future__ import annotations

import threading

import pytest


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item):
    thread = threading.main_thread()
    name, thread.name = thread.name, item.nodeid
    try:
        return (yield)
    finally:
        thread.name = name
