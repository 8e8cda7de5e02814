"""The tempo the instrument's beat/bar grid follows, from one source at a time.

Sources: "internal" (whatever `inst.bpm(...)` was set to), "midi" (24 PPQN clock from `MidiControl`),
"tidal" (cps and cycle from /lmdm/play messages) and "link" (Ableton Link through the optional `aalink`
package). Every source may report at any time; only the active one reaches `inst.bpm`, and only at a
limited rate, so a jittery external clock never floods the engine. Switching is explicit: `clock.use(...)`.

Like the Instrument, a Clock is touched only from the control loop's thread.
"""

from __future__ import annotations

import asyncio
import math
import statistics
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

SOURCES = ("internal", "midi", "tidal", "link")
BPM_RANGE = (20.0, 400.0)  # what Instrument.bpm accepts
LINK_INSTALL_HINT = "pip install aalink"


class ClockSourceUnavailable(RuntimeError):
    """A tempo source that cannot run here (Link without the aalink package, or without an asyncio loop)."""


def check_bpm(bpm: Any, what: str = "bpm") -> float:
    if isinstance(bpm, bool) or not isinstance(bpm, int | float) or not math.isfinite(bpm):
        raise ValueError(f"{what} must be a finite number, got {bpm!r}")
    lo, hi = BPM_RANGE
    if not lo <= bpm <= hi:
        raise ValueError(f"{what} must be in {lo:g}..{hi:g} bpm, got {float(bpm):g}")
    return float(bpm)


class TickTempo:
    """Tempo from MIDI clock ticks (24 per quarter note), robust to timing jitter.

    A least-squares line through the arrival times of the last `window` ticks gives the tick period; ticks
    further from that line than 4 median absolute deviations (a late wake-up, a scheduler hiccup) are left
    out and the line fitted again. The error of such a slope falls with window^1.5, so three beats of ticks
    with a few ms of jitter each give the tempo to a small fraction of a bpm. A pause longer than `gap_s`
    starts the estimate afresh (the clock was stopped or the cable pulled).
    """

    def __init__(self, ppqn: int = 24, window: int = 72, min_ticks: int = 24, gap_s: float = 0.5) -> None:
        if window < min_ticks or min_ticks < 3:
            raise ValueError(f"need window >= min_ticks >= 3, got window={window}, min_ticks={min_ticks}")
        self.ppqn = ppqn
        self.min_ticks = min_ticks
        self.gap_s = gap_s
        self.times: deque[float] = deque(maxlen=window)
        self.bpm: float | None = None

    def reset(self) -> None:
        self.times.clear()
        self.bpm = None

    def tick(self, t: float) -> float | None:
        """Add a tick that arrived at `t` (seconds); return the tempo estimate once there are enough ticks."""
        if self.times and not 0.0 <= t - self.times[-1] <= self.gap_s:
            self.times.clear()  # a pause or time running backwards: the old ticks say nothing now
        self.times.append(t)
        if len(self.times) < self.min_ticks:
            return self.bpm
        period = _robust_slope(list(self.times))
        if period > 0:
            bpm = 60.0 / (period * self.ppqn)
            if math.isfinite(bpm):
                self.bpm = bpm
        return self.bpm


def _fit(xs: list[float], ys: list[float]) -> tuple[float, float]:
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    sxy = sum((x - mx) * (y - my) for x, y in zip(xs, ys))
    slope = sxy / sxx
    return slope, my - slope * mx


def _robust_slope(times: list[float]) -> float:
    """Seconds per tick: least squares of time on tick index, refitted without outliers."""
    xs = [float(i) for i in range(len(times))]
    t0 = times[0]
    ys = [t - t0 for t in times]  # relative times keep the sums well conditioned
    slope, icpt = _fit(xs, ys)
    res = [abs(y - (slope * x + icpt)) for x, y in zip(xs, ys)]
    mad = statistics.median(res)
    limit = max(4.0 * mad, 1e-4)
    keep = [i for i, r in enumerate(res) if r <= limit]
    if len(set(keep)) >= 3 and len(keep) < len(xs):
        slope, _ = _fit([xs[i] for i in keep], [ys[i] for i in keep])
    return slope


@dataclass(frozen=True)
class SourceReport:
    """What a source last said: its tempo, and (where it knows one) which beat it was at `at`."""

    bpm: float
    beat: float | None
    at: float


class Clock:
    """Feeds `inst.bpm` from the active tempo source (see the module docstring).

    `min_interval_s`/`min_delta_bpm`: at most one bpm change per interval, and none smaller than the delta
    (a newer value waiting out the interval is applied when it ends, so the last word always lands).
    `beats_per_cycle`: how many beats one Tidal cycle holds (4, the usual `setcps (bpm/60/4)` convention).
    """

    def __init__(
        self,
        inst: Any,
        source: str = "internal",
        *,
        min_interval_s: float = 0.25,
        min_delta_bpm: float = 0.1,
        beats_per_cycle: float = 4.0,
        on_error: Callable[[str], None] | None = None,
    ) -> None:
        if source == "link":
            raise ValueError("start on another source and switch with clock.use('link') from the event loop")
        if source not in SOURCES:
            raise ValueError(f"clock source must be one of {', '.join(SOURCES)}, got {source!r}")
        if not beats_per_cycle > 0:
            raise ValueError(f"beats_per_cycle must be > 0, got {beats_per_cycle}")
        self.inst = inst
        self.min_interval_s = float(min_interval_s)
        self.min_delta_bpm = float(min_delta_bpm)
        self.beats_per_cycle = float(beats_per_cycle)
        self.on_error = on_error or (lambda msg: print(f"lmdm-live clock: {msg}", file=sys.stderr))
        self.reports: dict[str, SourceReport] = {}
        self.bpm_sets = 0  # how many times the clock has set inst.bpm (rate limiting is visible here)
        self._source = source
        self._applied = float(inst.bpm())
        self._last_set = -math.inf
        self._pending: float | None = None
        self._flush_handle: asyncio.TimerHandle | None = None
        self._anchor = (time.monotonic(), 0.0, self._applied)  # internal beat: (time, beat, bpm)
        self._link = None
        self._link_task: asyncio.Task | None = None

    # --- reading -----------------------------------------------------------------------------------------

    @property
    def source(self) -> str:
        return self._source

    @source.setter
    def source(self, name: str) -> None:
        self.use(name)

    @property
    def bpm(self) -> float:
        """The active source's tempo (what inst.bpm converges to)."""
        rep = self.reports.get(self._source)
        if self._source == "internal" or rep is None:
            return float(self.inst.bpm())
        return rep.bpm

    def beat(self, now: float | None = None) -> float:
        """The active source's beat position at `now` (time.monotonic()), extrapolated from its last report."""
        now = time.monotonic() if now is None else now
        if self._source == "link" and self._link is not None:
            return float(self._link.beat) + (now - time.monotonic()) * self.bpm / 60.0
        rep = self.reports.get(self._source)
        if self._source != "internal" and rep is not None and rep.beat is not None:
            return rep.beat + (now - rep.at) * rep.bpm / 60.0
        t0, b0, bpm0 = self._reanchor()
        return b0 + (now - t0) * bpm0 / 60.0

    def beat_phase(self, now: float | None = None) -> float:
        """Where in the current beat the active source is: 0 on the beat, rising towards 1."""
        return self.beat(now) % 1.0

    def status(self) -> dict:
        return {
            "source": self._source,
            "bpm": round(self.bpm, 3),
            "beat": round(self.beat(), 3),
            "phase": round(self.beat_phase(), 3),
            "heard_from": sorted(self.reports),
            "bpm_sets": self.bpm_sets,
        }

    def __repr__(self) -> str:
        return f"Clock(source={self._source!r}, bpm={self.bpm:.2f})"

    # --- switching -----------------------------------------------------------------------------------------

    def use(self, source: str) -> None:
        """Make `source` the one that drives inst.bpm; its last report (if any) is applied at once."""
        if source not in SOURCES:
            raise ValueError(f"clock source must be one of {', '.join(SOURCES)}, got {source!r}")
        if source == self._source:
            return
        now = time.monotonic()
        beat = self.beat(now)  # the outgoing source's beat, for the internal one to run on from
        if source == "link":
            self._start_link()  # raises before anything changes
        elif self._source == "link":
            self._stop_link()
        if source == "internal":
            self._anchor = (now, beat, float(self.inst.bpm()))
        self._source = source
        self._cancel_pending()
        rep = self.reports.get(source)
        if rep is not None and source != "internal":
            self._push(rep.bpm, force=True)

    # --- source inputs -------------------------------------------------------------------------------------

    def internal(self, bpm: float) -> None:
        """Set the internal tempo (a knob or a command); refused while another source drives the tempo."""
        bpm = check_bpm(bpm)
        if self._source != "internal":
            raise ValueError(
                f"the tempo follows the {self._source} clock; switch with clock.use('internal') to set it"
            )
        self._reanchor()
        self._set(bpm)

    def midi(self, bpm: float, beat: float | None = None, at: float | None = None) -> None:
        """A tempo estimate from MIDI clock (and the beat since the last start, when known)."""
        self._report("midi", check_bpm(bpm, "MIDI clock tempo"), beat, at)

    def tidal(self, cps: float, cycle: float | None = None, at: float | None = None) -> None:
        """Tidal's cycles per second and the cycle heard at `at` (time.monotonic()), from /lmdm/play."""
        if isinstance(cps, bool) or not isinstance(cps, int | float) or not math.isfinite(cps) or cps <= 0:
            raise ValueError(f"cps must be a finite number > 0, got {cps!r}")
        bpm = cps * 60.0 * self.beats_per_cycle
        lo, hi = BPM_RANGE
        if not lo <= bpm <= hi:
            raise ValueError(
                f"cps {cps:g} is {bpm:g} bpm at {self.beats_per_cycle:g} beats per cycle, outside {lo:g}..{hi:g}"
            )
        beat = None
        if cycle is not None:
            if isinstance(cycle, bool) or not isinstance(cycle, int | float) or not math.isfinite(cycle):
                raise ValueError(f"cycle must be a finite number, got {cycle!r}")
            beat = float(cycle) * self.beats_per_cycle
        self._report("tidal", bpm, beat, at)

    def _report(self, source: str, bpm: float, beat: float | None, at: float | None) -> None:
        if at is not None and (
            isinstance(at, bool) or not isinstance(at, int | float) or not math.isfinite(at)
        ):
            raise ValueError(f"at must be a time.monotonic() instant, got {at!r}")
        self.reports[source] = SourceReport(bpm, beat, time.monotonic() if at is None else float(at))
        if source == self._source:
            self._push(bpm)

    # --- applying, rate-limited ----------------------------------------------------------------------------

    def _push(self, bpm: float, force: bool = False) -> None:
        if not force and abs(bpm - self._applied) < self.min_delta_bpm:
            self._cancel_pending()  # back where we are: a waiting change is stale now
            return
        now = time.monotonic()
        wait = self._last_set + self.min_interval_s - now
        if force or wait <= 0:
            self._cancel_pending()
            self._set(bpm)
            return
        self._pending = bpm
        if self._flush_handle is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                return  # no loop (a plain script): the value lands with the next report or flush()
            self._flush_handle = loop.call_later(wait, self.flush)

    def flush(self) -> None:
        """Apply a rate-limited change that is waiting, now."""
        self._flush_handle = None
        if self._pending is not None:
            bpm, self._pending = self._pending, None
            self._set(bpm)

    def _cancel_pending(self) -> None:
        self._pending = None
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None

    def _set(self, bpm: float) -> None:
        bpm = round(bpm, 3)
        try:
            self.inst.bpm(bpm)
        except ValueError as e:
            self.on_error(str(e))
            return
        self._applied = bpm
        self._last_set = time.monotonic()
        self.bpm_sets += 1

    def _reanchor(self) -> tuple[float, float, float]:
        """The internal beat line; restarted (continuous in beats) whenever inst.bpm changed under it."""
        t0, b0, bpm0 = self._anchor
        bpm = float(self.inst.bpm())
        if bpm != bpm0:
            now = time.monotonic()
            self._anchor = (now, b0 + (now - t0) * bpm0 / 60.0, bpm)
        return self._anchor

    # --- Ableton Link --------------------------------------------------------------------------------------

    def _start_link(self) -> None:
        try:
            import aalink
        except ImportError:
            raise ClockSourceUnavailable(
                f"Ableton Link needs the optional aalink package: {LINK_INSTALL_HINT}"
            ) from None
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            raise ClockSourceUnavailable(
                "Ableton Link runs inside the asyncio loop: call clock.use('link') there"
            ) from None
        link = aalink.Link(self.bpm, loop)
        link.enabled = True
        self._link = link
        self._link_task = loop.create_task(self._poll_link(link))

    def _stop_link(self) -> None:
        if self._link_task is not None:
            self._link_task.cancel()
        if self._link is not None:
            self._link.enabled = False
        self._link, self._link_task = None, None

    async def _poll_link(self, link: Any, period_s: float = 0.05) -> None:
        while True:
            try:
                bpm = check_bpm(float(link.tempo), "Link tempo")
                self._report("link", bpm, float(link.beat), time.monotonic())
            except ValueError as e:
                self.on_error(str(e))
            await asyncio.sleep(period_s)

    def close(self) -> None:
        """Stop following Link (if it was) and drop a waiting change."""
        self._cancel_pending()
        if self._source == "link":
            self._stop_link()
            self._source = "internal"
