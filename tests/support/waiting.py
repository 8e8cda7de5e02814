"""Waiting for something another thread or process does, on a shared machine where it may come late.

Tests poll rather than sleep a fixed time: a fixed sleep is too short when the machine is busy and wastes
time when it is not.
"""

from __future__ import annotations

import time
from collections.abc import Callable


def wait_for(cond: Callable[[], bool], timeout: float, poll_s: float = 0.01) -> bool:
    """Whether `cond()` held within `timeout` seconds; asked once more at the end, so that a slow last poll
    cannot turn a success into a failure."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(poll_s)
    return cond()


def wait_until(cond: Callable[[], bool], timeout: float, what: str, poll_s: float = 0.02) -> None:
    """Like `wait_for`, for a step the test cannot go on without: a failure names what never happened."""
    if not wait_for(cond, timeout, poll_s):
        raise AssertionError(f"{what} did not happen within {timeout} s")
