"""Judging real-time tests on a shared machine: an underrun is either the machine's (the engine could not
keep time, which it measures) or a defect (audio lost on the way out while the engine kept ahead).

A test that met the first cannot judge what it is about, so it raises `MachineTooBusy`, and pytest runs it
again (pyproject's `--only-rerun MachineTooBusy`); the second fails at once.
"""

from __future__ import annotations

from lmdm_live.live.schedule import underruns_from_load


class MachineTooBusy(Exception):
    """The machine could not keep real time during this test; its timing cannot be judged this run."""


def check_underruns(status: dict) -> None:
    """Pass with no underruns; raise MachineTooBusy when the engine fell behind real time by most of its
    headroom (the only way a working ring runs dry); fail when the ring ran dry while the engine kept up."""
    n = int(status["underruns"])
    if n == 0:
        return
    behind, headroom = float(status["behind_ms_max"]), float(status["headroom_ms"])
    assert underruns_from_load(status), (
        f"{n} underruns, yet the engine was never more than {behind:.0f} ms behind real time with "
        f"{headroom:.0f} ms of headroom: audio was lost on the way out"
    )
    raise MachineTooBusy(
        f"{n} underruns: the engine fell {behind:.0f} ms behind real time ({headroom:.0f} ms of headroom)"
    )


def check_rewound(status: dict) -> None:
    """A change made while blocks were queued remade them (a rewind). The engine does that only when a
    queued block can be made again before it is due, which depends on where in a block the change falls
    and how fast the machine is just then: a run without one is judged again (a broken rewind never has
    one, so it still fails, on the third run)."""
    if status["rewinds"] < 1:
        x = float(status.get("x_realtime") or 0.0)
        raise MachineTooBusy(
            f"no rewind this run (the model at {x:.1f}x real time): no block could be remade"
        )
