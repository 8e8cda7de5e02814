"""The real-time runner: an inference thread keeps a ring of audio ahead of the audio callback.

Flow (one direction): controls submit `Change`s -> the inference thread applies the due ones at a block
boundary, generates the block with `LMDMStream`, runs it through the `OutputChain` (fades, gain, channel
map, resampling to the device rate) and writes it into the `AudioRing`; the backend's callback only copies
out of the ring. Every applied change is written to an event log keyed by block index, so `replay` rebuilds
the same samples offline.
"""

from __future__ import annotations

import collections
import itertools
import math
import statistics
import sys
import threading
import time
import traceback
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..audio.ring import AudioRing
from ..dsp.limiter import DEFAULT_LIMITER, LimiterConfig
from ..model.precision import model_dtype_name
from .eventlog import EventLog, json_safe
from .memory import mmap_large, trim
from .output import OutputChain, splice_frames
from .schedule import HEADROOM_PRESETS_MS, Change, EngineStats, Playing, QueuedBlock
from .stream import LMDMStream


class Engine:
    """Runs one `LMDMStream` in real time into an `AudioBackend` (or into nothing, for offline use)."""

    def __init__(
        self,
        stream: LMDMStream,
        backend=None,
        headroom_ms: float = HEADROOM_PRESETS_MS["normal"],
        out_rate: int | None = None,
        out_channels: int | None = None,
        log_path: str | Path | None = None,
        bpm: float = 120.0,
        model_ref: str = "",
        limiter: LimiterConfig | None = DEFAULT_LIMITER,  # None: no limiter
    ) -> None:
        self.stream, self.backend = stream, backend
        self.out_rate = int(
            backend.sample_rate if backend is not None else out_rate or stream.model.sample_rate
        )
        self.out_channels = int(backend.channels if backend is not None else out_channels or 2)
        if headroom_ms <= 0:
            raise ValueError(f"headroom must be > 0 ms, got {headroom_ms}")
        self.headroom_ms = float(headroom_ms)
        self.bpm = float(bpm)
        self.model_ref = model_ref
        self.chain = OutputChain(stream.model.sample_rate, self.out_rate, self.out_channels, limiter=limiter)
        self.playing = Playing(stream.params, stream.seed, self.chain.gain)
        block_out = math.ceil(
            stream.model.lmdm.block_frames * stream.model.hop * self.out_rate / self.chain.in_rate
        )
        self.block_out_frames = block_out
        self.headroom_frames = int(self.headroom_ms * self.out_rate / 1000)
        # the ring holds the headroom, the compute lead (under a block when faster than real time) and the
        # block being written (a block is written whole)
        self.ring = AudioRing(self.out_channels, self.headroom_frames + 3 * block_out + 4096)
        self.stats = EngineStats()
        self._pending: collections.deque[Change] = collections.deque()
        self._ids = itertools.count(1)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._record = None
        self._record_lock = threading.Lock()  # inference thread vs control thread; never the audio callback
        self.errors: collections.deque[str] = collections.deque(maxlen=32)
        self._log = EventLog(log_path, self.errors)
        self.fault_injector = None  # tests: a callable(block_index) that may raise, run before a block
        self.trim_every_s = 10.0  # give freed heap back to the system this often (memory.py), while idle
        self.live = None  # a live.inputs.LiveInput: sketch / jam / delay inputs for each block
        # A change regenerates the queued blocks not yet heard, from the stream's state saved at their
        # boundary, instead of waiting behind them: latency then no longer grows with the ring. Off with a
        # live input, whose blocks depend on audio arriving in real time.
        self.regenerate = True
        # ... and with `splice` (the low-latency preset) a change cuts into the block playing, a few
        # milliseconds ahead of the read position, instead of waiting for the next block boundary
        self.splice = False
        self.splice_fade = int(0.005 * self.out_rate)
        period = int(getattr(backend, "blocksize", 0) or 1024)
        self.rewind_guard_frames = int(0.01 * self.out_rate) + 2 * period  # beyond a callback's reach
        self._splice: tuple[int, int, np.ndarray] | None = None  # (block, frame, its old version)
        self._queued: collections.deque[QueuedBlock] = collections.deque()
        self._last_rewind = 0.0
        self._held_lead = 0  # lead_frames while a live input plays
        self.running = False

    # --- control side -------------------------------------------------------------------------------------

    def submit(self, kind: str, value: Any = None, at: str | float = "now") -> Change:
        """Queue a change; the inference thread applies it at the block boundary `at` resolves to."""
        target = None
        if at in ("beat", "bar"):
            grid = 60.0 / self.bpm * (4 if at == "bar" else 1)
            next_start = self.stream.block_index * self.stream.model.block_seconds
            target = math.ceil(next_start / grid - 1e-9) * grid
        change = Change(kind, value, at, time.monotonic(), next(self._ids), target)
        self._pending.append(change)
        self._wake.set()
        return change

    def cancel_pending(self) -> None:
        """Drop every change not applied yet (hush)."""
        self._pending.clear()

    def record(self, target: str | Path | int) -> None:
        """Record what is played to a new WAV: a path (its folders are made), or a descriptor opened for
        writing. Its header is kept true while it grows, so a killed process leaves a readable file."""
        from ..audio.wav import WavWriter

        with self._record_lock:
            if self._record is not None:
                self._record.close()
                self._record = None
            if not isinstance(target, int):
                Path(target).parent.mkdir(parents=True, exist_ok=True)
            self._record = WavWriter(target, self.out_rate, self.out_channels, subtype="FLOAT")

    def stop_recording(self) -> None:
        with self._record_lock:
            if self._record is not None:
                self._record.close()
                self._record = None

    # --- lifecycle ----------------------------------------------------------------------------------------

    def start(self) -> None:
        if self.running:
            return
        # the audio callback runs Python too: hand it the GIL within a fraction of a JACK period, not the
        # default 5 ms, while the inference thread works
        sys.setswitchinterval(min(sys.getswitchinterval(), 0.0005))
        mmap_large()  # large short-lived tensors mapped and unmapped whole: the heap does not fragment
        self._open_log()
        # Prime before the first callback, to the lead the loop keeps (the headroom plus the compute time the
        # priming blocks showed): filled only to the headroom, a first block slower than the headroom runs the
        # ring dry at once.
        while self.ring.fill < max(self.headroom_frames, self.lead_frames()) and (
            self.ring.free >= self.block_out_frames + 64
        ):
            self._generate_one()
        self.ring.reset_stats()
        if self.backend is not None:
            self.backend.start(self.ring)
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="lmdm-inference", daemon=True)
        self.running = True
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None
        if self.backend is not None:
            self.backend.stop()
        self._commit(everything=True)
        self.stop_recording()
        self._log.write({"type": "stop", "block": self.stream.block_index})
        self._log.close()
        self.running = False

    def __enter__(self) -> Engine:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    # --- inference thread ---------------------------------------------------------------------------------

    def lead_frames(self) -> int:
        """Start the next block while this much audio is still queued: the headroom plus the time a block
        takes (the slowest of the last few, with a margin), so the ring never drains below the headroom while
        one is made. Held while a live input plays: its delay was set from the ring's fill, which it sets."""
        if self._held_lead and self.live is not None and self.live.plan.feeds():
            return self._held_lead
        recent = list(self.stats.block_ms)[-8:]
        lead = self.headroom_frames + int(1.25 * max(recent, default=0.0) / 1e3 * self.out_rate)
        self._held_lead = lead if recent else 0  # held from when a block's time is known
        return lead

    def _loop(self) -> None:
        behind = 0.0  # real time lost against audio made since the ring was last full (see EngineStats)
        trimmed = time.monotonic()
        while not self._stop.is_set():
            self._commit()
            taken = self._rewind() if self._pending else 0
            if taken:  # audio counted as made that is to be made again
                behind += taken / self.out_rate
                self._note_behind(behind)
                continue
            if self.ring.fill >= self.lead_frames() or self.ring.free < self.block_out_frames + 64:
                if time.monotonic() - trimmed >= self.trim_every_s:  # the ring is full: time to spare
                    trim()
                    trimmed = time.monotonic()
                # sleep until roughly a tenth of the headroom has played, or a change arrives
                timeout = max(self.headroom_ms / 10000, 0.002)
                t0 = time.perf_counter()
                self._wake.wait(timeout=timeout)
                self._wake.clear()
                behind = max(0.0, time.perf_counter() - t0 - timeout)  # a full ring, less any oversleep
                self._note_behind(behind)
                continue
            t0, made = time.perf_counter(), 0.0
            try:
                # what reached the ring, not a block's length: a block after a decoder restart or a splice
                # writes less, and counting it whole hid a falling-behind engine behind "never behind"
                made = self._generate_one() / self.out_rate
            except Exception as e:  # outside a block (a change, the log, the ring): report, keep the thread
                self.errors.append(f"engine: {type(e).__name__}: {e}")
                self.stats.last_error = self.errors[-1]
                time.sleep(0.01)
            behind += time.perf_counter() - t0 - made
            self._note_behind(behind)

    # --- regenerating queued blocks -----------------------------------------------------------------------

    def _commit(self, everything: bool = False) -> None:
        """Blocks too close to the read position to be made again are final: record them, count their
        changes' latency."""
        limit = self.ring.frames_read + self.rewind_guard_frames
        while self._queued and (everything or self._queued[0].start < limit):
            q = self._queued.popleft()
            self.stats.latency_ms.extend(q.latency_ms)
            with self._record_lock:
                if self._record is not None:
                    self._record.write(q.out)

    def _due_at(self, c: Change, q: QueuedBlock, now: float) -> bool:
        """Whether change `c` would apply at queued block `q` (the rules of `_due`, for a block made again)."""
        if isinstance(c.at, str) and c.at in ("now", "block"):
            return True
        if isinstance(c.at, str):
            return q.block * self.stream.model.block_seconds + 1e-9 >= (c.target_s or 0.0)
        heard = now + (q.start - self.ring.frames_read) / self.out_rate + self.pipeline_delay_s()
        return heard + 1e-3 >= float(c.at)

    def _rewind(self) -> int:
        """A pending change due at a queued block that is not heard yet, with time left to make it again:
        take that block and those after it back out of the ring, restore the stream and the output chain
        to its boundary, and queue the changes they had applied ahead of the new ones. Exact: the same
        state, seeds and changes make the same audio, and the log's "rewind" tells a replay to do the same.
        Returns the frames taken back (0: none)."""
        if not (self.regenerate and self.live is None and self._queued):
            return 0
        now = time.monotonic()
        if now - self._last_rewind < self.stream.model.block_seconds:
            return 0  # at most one a block: a flood of changes must not remake the same block forever
        if self.ring.fill < self.headroom_frames:  # not refilled since the last one: under a flood of changes
            return 0  # a slow machine would run dry remaking; latency gives way instead of the sound
        recent = list(self.stats.block_ms)[-8:]
        compute = int(1.25 * max(recent) / 1e3 * self.out_rate) if recent else self.block_out_frames
        # half the headroom stays as the margin it is there for: a remade block that runs late must not
        # find the ring empty (a fuzz of OSC changes underran once with none)
        compute += self.headroom_frames // 2
        limit = self.ring.frames_read + self.rewind_guard_frames + compute
        pending = list(self._pending)
        if self.splice and any(isinstance(c.at, str) and c.at in ("now", "block") for c in pending):
            for i, q in enumerate(self._queued):
                if q.stream is not None and q.start + q.out.shape[0] > limit:
                    return self._take_back(i, max(limit - q.start, 0), compute, now)
        for i, q in enumerate(self._queued):
            if q.stream is None or q.start < limit or not any(self._due_at(c, q, now) for c in pending):
                continue
            return self._take_back(i, 0, compute, now)
        return 0

    def _take_back(self, i: int, at: int, compute: int, now: float) -> int:
        """Queued block i and those after it out of the ring from its frame `at` on (0: whole), the stream
        and the output chain back to its boundary, their changes queued again ahead of the new ones.
        Returns the frames taken back (0: refused, too close to the read position)."""
        q = self._queued[i]
        written = self.ring.frames_written
        if not self.ring.retract(q.start + at, self.rewind_guard_frames + compute):
            return 0
        dropped = [self._queued.pop() for _ in range(len(self._queued) - i)][::-1]
        self.stream.restore(q.stream)
        self.chain.restore(q.chain)
        self._pending.extendleft(reversed([c for d in dropped for c in d.applied]))
        self.stats.rewinds += 1
        self._last_rewind = now
        if at:
            self._splice = (q.block, at, q.out)
            self._log.write({"type": "splice", "block": q.block, "at": at, "fade": self.splice_fade})
        else:
            self._log.write({"type": "rewind", "block": q.block})
        return written - (q.start + at)

    def _note_behind(self, behind_s: float) -> None:
        if behind_s * 1e3 > self.stats.behind_ms_max:
            self.stats.behind_ms_max = behind_s * 1e3

    def _due(self, block: int) -> list[Change]:
        """Changes that apply to `block`: those asked for now, or whose beat/bar/time has come."""
        if not self._pending:
            return []
        model = self.stream.model
        block_s = model.block_seconds
        start_s = block * block_s  # stream time of this block's first sample
        audible_at = time.monotonic() + self.ring.fill / self.out_rate + self.pipeline_delay_s()
        due, keep = [], []
        while self._pending:
            c = self._pending.popleft()
            if isinstance(c.at, str) and c.at in ("now", "block"):
                due.append(c)
            elif isinstance(c.at, str):  # beat / bar: the first block starting on or after the grid line
                (due if start_s + 1e-9 >= (c.target_s or 0.0) else keep).append(c)
            else:
                # the first block heard at or after that instant, like beat/bar
                (due if audible_at + 1e-3 >= float(c.at) else keep).append(c)
        self._pending.extend(keep)
        return due

    def _apply(self, c: Change, block: int) -> None:
        s = self.stream
        if c.kind == "params":
            s.set(c.value)
        elif c.kind == "gain":
            self.chain.gain = float(c.value)
        elif c.kind == "drop":
            s.drop_context(int(c.value))
        elif c.kind == "seed":
            s.seed = int(c.value)
        elif c.kind == "reset":
            s.restart()
        self._log.write({"type": c.kind, "block": block, "value": json_safe(c.value)})

    def _generate_one(self) -> int:
        """Make the next block, apply its due changes first, queue it and write it to the ring; returns the
        frames written."""
        s = self.stream
        block = s.block_index
        start = self.ring.frames_written
        rewindable = self.regenerate and self.live is None
        snap = s.snapshot() if rewindable else None  # before this block's changes: they are applied again
        chain_snap = self.chain.snapshot() if rewindable else ()
        due = self._due(block)
        for c in due:
            try:
                self._apply(c, block)
            except Exception as e:  # one bad change is reported and skipped; the others and the block go on
                self.errors.append(f"engine: {type(e).__name__}: {e} (change {c.kind} dropped)")
                self.stats.last_error = self.errors[-1]
        self.playing = Playing(s.params, s.seed, self.chain.gain)
        t0 = time.perf_counter()
        bad_before = s.nonfinite_blocks
        try:
            if self.fault_injector is not None:
                self.fault_injector(block)
            live = self.live
            audio = s.next_block(**live.block_inputs(block)) if live is not None else s.next_block()
            if live is not None:
                audio = live.mix(audio, block)
            if s.nonfinite_blocks != bad_before or not np.isfinite(audio).all():
                raise FloatingPointError(f"block {block}: the model produced NaN/Inf")
            out = self.chain.push(audio)
        except Exception as e:  # a failed block must never stop the sound
            self.stats.faults += 1
            self.stats.last_error = f"{type(e).__name__}: {e}"
            self.errors.append(f"block {block}: {self.stats.last_error}")
            self._log.write(
                {
                    "type": "fault",
                    "block": block,
                    "error": self.stats.last_error,
                    "trace": traceback.format_exc(limit=3),
                }
            )
            s.recover(next_block=block + 1)
            out = self.chain.fail(s.model.lmdm.block_frames * s.model.hop)
        ms = (time.perf_counter() - t0) * 1e3
        write = out
        if self._splice is not None and self._splice[0] == block:
            _, at, old = self._splice
            self._splice = None
            out = splice_frames(old, out, at, self.splice_fade)
            write, start, snap = out[at:], start - at, None  # its head was heard: never made again
        fill_before = self.ring.fill
        written = self.ring.write(write)
        if written < write.shape[0]:  # cannot happen when the loop waits for room; never drop silently
            self.errors.append(f"block {block}: ring full, {write.shape[0] - written} frames dropped")
        now = time.monotonic()
        heard = (fill_before / self.out_rate + self.pipeline_delay_s() + self._device_latency()) * 1e3
        latency = [(now - c.submitted) * 1e3 + heard for c in due]
        self.stats.blocks += 1
        self.stats.block_ms.append(ms)
        self._queued.append(QueuedBlock(block, start, snap, chain_snap, list(due), latency, out))
        return written

    def pipeline_delay_s(self) -> float:
        """Audio a block's change waits behind besides the ring: the streaming decoder's lookahead, the
        held-back fade tail and the resampler's filter delay."""
        held = (self.stream.latency_samples + self.chain.fade) / self.chain.in_rate
        return held + float(self.chain.resampler.latency_frames) / self.out_rate

    def heard_in_s(self) -> float:
        """From now until the first sample of the block about to be made is heard."""
        return self.ring.fill / self.out_rate + self.pipeline_delay_s() + self._device_latency()

    def lead_s(self) -> float:
        """The longest `heard_in_s` gets when a block is made (the loop starts one below this lead)."""
        ahead = max(self.lead_frames(), self.headroom_frames) / self.out_rate
        return ahead + self.pipeline_delay_s() + self._device_latency()

    def _device_latency(self) -> float:
        return float(getattr(self.backend, "output_latency_s", 0.0) or 0.0)  # None: getattr gives 0.0

    # --- event log ----------------------------------------------------------------------------------------

    def _open_log(self) -> None:
        s = self.stream
        self._log.open(
            {
                "type": "start",
                "version": 1,
                "model": self.model_ref or s.model.name,
                "dtype": model_dtype_name(s.model.net),
                "threads": torch.get_num_threads(),
                "window": {
                    "mode": s.model.lmdm.mode,
                    "context_frames": s.model.lmdm.context_frames,
                    "block_frames": s.model.lmdm.block_frames,
                },
                "seed": s.seed,
                "params": s.params.to_dict(),
                "block": s.block_index,
                "out_rate": self.out_rate,
                "out_channels": self.out_channels,
                "fade": self.chain.fade,
                "gain": self.chain.gain,
                "limiter": asdict(self.chain.limiter.cfg) if self.chain.limiter is not None else None,
            }
        )

    # --- figures ------------------------------------------------------------------------------------------

    def status(self) -> dict:
        ms, block_s = list(self.stats.block_ms), self.stream.model.block_seconds
        med = statistics.median(ms) if ms else 0.0
        cb, lat = getattr(self.backend, "stats", None), list(self.stats.latency_ms)
        return {
            "running": self.running,
            "blocks": self.stats.blocks,
            "block_index": self.stream.block_index,
            "ms_per_block": round(med, 2),
            "rtf": round(med / 1e3 / block_s, 4) if block_s else None,
            "x_realtime": round(block_s / (med / 1e3), 2) if med else None,
            "underruns": self.ring.underruns,
            "behind_ms_max": round(self.stats.behind_ms_max, 1),
            "ring_ms": round(self.ring.fill / self.out_rate * 1e3, 1),
            "ring_min_ms": round(self.ring.fill_min / self.out_rate * 1e3, 1),
            "headroom_ms": self.headroom_ms,
            "faults": self.stats.faults,
            "rewinds": self.stats.rewinds,
            "last_error": self.stats.last_error,
            "latency_ms_last": round(lat[-1], 1) if lat else None,
            "latency_ms_max": round(max(lat), 1) if lat else None,
            "callback_ms_mean": round(cb.mean_ms, 4) if cb is not None and cb.callbacks else None,
            "callback_ms_max": round(cb.max_ms, 4) if cb is not None and cb.callbacks else None,
            "out_rate": self.out_rate,
            "limiter_db_last": None if (lim := self.chain.limiter) is None else round(lim.reduction_db, 2),
        }

    def latency(self) -> dict:
        """Worst-case control -> sound: the ring and device buffers, waiting for a block boundary, compute."""
        ms = list(self.stats.block_ms)
        compute = statistics.median(ms) if ms else 0.0
        pipeline_ms = (self._device_latency() + self.pipeline_delay_s()) * 1e3
        block_ms = self.stream.model.block_seconds * 1e3
        if self.regenerate and self.live is None:  # a change remakes what is queued: the ring is no wait
            buffer_ms = (
                self.rewind_guard_frames / self.out_rate + self.headroom_ms / 2e3
            ) * 1e3 + pipeline_ms
            block_ms = self.splice_fade / self.out_rate * 1e3 if self.splice else block_ms
            compute = 1.25 * max(ms[-8:]) if ms else 0.0
        else:
            buffer_ms = self.headroom_ms + pipeline_ms
        return {
            "buffer_ms": round(buffer_ms, 1),
            "block_ms": round(block_ms, 1),
            "compute_ms": round(compute, 1),
            "total_ms": round(buffer_ms + block_ms + compute, 1),
            **(self.live.latency() if self.live is not None else {}),
        }
