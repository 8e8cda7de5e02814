"""How many threads the DiT's math gets while the instrument plays.

torch's default is one per core. On a small machine that leaves none for the audio callback, JACK and the
control loop, and the OpenMP team stalls whenever one of its threads is pre-empted: on two cores the engine
made a block in 264 ms with two threads and in 179 ms with one. So the instrument leaves a core free.
"""

from __future__ import annotations

import os

import torch


def cores() -> int:
    """Cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def inference_threads(threads: int | None = None) -> int:
    """`threads` if given (>= 1), else all cores but one (at least one)."""
    if threads is None:
        return max(1, cores() - 1)
    if int(threads) < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    return int(threads)


class ThreadBudget:
    """Sets torch's intra-op threads while the instrument plays and gives the old number back after."""

    def __init__(self, threads: int) -> None:
        self.threads, self._before = threads, None

    def enter(self) -> None:
        if self._before is None:
            self._before = torch.get_num_threads()
            torch.set_num_threads(self.threads)

    def leave(self) -> None:
        if self._before is not None:
            torch.set_num_threads(self._before)
            self._before = None
