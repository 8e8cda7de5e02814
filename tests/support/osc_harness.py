"""An instrument played over OSC from another program (sclang, Tidal), as `lmdm-live` serves it.

The tests that drive it from outside need the same pieces: a free port to hand to the other program, the
OSC server on an asyncio loop of its own (the app runs it beside the REPL), and a record of when each block
was really heard, to judge timing on a machine whose load makes the engine run late.
"""

from __future__ import annotations

import asyncio
import math
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from waiting import wait_until

from lmdm_live import Instrument
from lmdm_live.audio import FileBackend
from lmdm_live.control.osc import OSCControl
from lmdm_live.model.bundle import LMDMModel


def free_udp_port() -> int:
    """A UDP port nothing listens on now, for a program that must be told its port before it starts."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class OSCServerThread:
    """An OSCControl serving `inst` from an asyncio loop on a thread of its own (the app runs it beside the
    REPL), on a free port (`port`); `kw` go to OSCControl."""

    def __init__(self, inst: Instrument, **kw) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="osc-test-loop", daemon=True)
        self.thread.start()
        self.ctl = OSCControl(inst, port=0, **kw)
        self.run(self.ctl.start())
        self.port = self.ctl.port

    def run(self, coro, timeout: float = 10.0):
        """Run `coro` on the loop and return its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    async def _shutdown(self) -> None:
        self.ctl.close()  # its transport belongs to the loop

    def close(self) -> None:
        self.run(self._shutdown())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


class HeardClock:
    """When each block of the stream was heard: a thread notes the ring's consumed-frame count against
    time.monotonic(), so timing checks hold even when a loaded machine makes the engine run late."""

    def __init__(self, inst: Instrument, poll_s: float = 0.002) -> None:
        self.engine = inst.engine
        self.marks: list[tuple[float, int]] = []
        self._poll = poll_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        last = -1
        while not self._stop.wait(self._poll):
            n = self.engine.ring.frames_read
            if n != last:
                self.marks.append((time.monotonic(), n))
                last = n

    def heard_at(self, block: int) -> float:
        """The time block `block` began to be heard (its first frame left the ring); inf if not yet."""
        first = max(0, block * self.engine.block_out_frames - self.engine.chain.fade)  # the held fade tail
        return next((t for t, n in self.marks if n > first), math.inf)

    def wait_heard(self, timeout: float = 10.0) -> None:
        """Wait until the block being made now has begun to be heard (before stopping, so that every block
        a change was applied to has a time)."""
        target = (self.engine.stream.block_index + 1) * self.engine.block_out_frames
        wait_until(lambda: bool(self.marks) and self.marks[-1][1] >= target, timeout, "playing out")

    @property
    def underrun_s(self) -> float:
        """Silence the ring played for lack of audio: it pushes every later block back by as much."""
        return self.engine.ring.underrun_frames / self.engine.out_rate

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)


@contextmanager
def played_over_osc(model: LMDMModel, tmp_path: Path) -> Iterator[tuple[Instrument, OSCControl, HeardClock]]:
    """A real-time instrument (a WAV file clocked like a sound card, its events logged to ev.jsonl) behind
    the OSC server on a free port (recording under `tmp_path`), and the clock of when its blocks were heard."""
    backend = FileBackend(tmp_path / "out.wav", model.sample_rate, realtime=True)
    inst = Instrument(model, backend=backend, steps=2, headroom_ms=170, log=tmp_path / "ev.jsonl", quiet=True)
    clock = HeardClock(inst)
    server = OSCServerThread(inst, record_dir=tmp_path)
    yield inst, server.ctl, clock
    server.close()
    clock.close()
    inst.stop()
