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
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

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
    """Tempo from MIDI clock ticks (24 per quarter note), robust to jitter, late and lost ticks.

    The tick period is the slope of arrival time over tick index, fitted by least squares over the last
    `window` ticks; its error falls with window^1.5, so three beats of ticks jittered by a few ms give the
    tempo to a fraction of a bpm. Two things would bend a plain line: a lost tick (an xrun drops MIDI too)
    shifts every later index by one, and a late delivery bunches ticks together. So the window is cut into
    runs at gaps (see `tick_period`), each run keeps its own intercept (the pooled slope
    does not care how many ticks a gap swallowed), and ticks further from their run's line than 4 median
    absolute deviations are dropped before a second fit. A pause longer than `gap_s` starts afresh (the
    clock was stopped or the cable pulled).
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
        times = list(self.times)
        period = tick_period(times, float(np.median(np.diff(times))))
        if period is not None and period > 0:
            bpm = 60.0 / (period * self.ppqn)
            if math.isfinite(bpm):
                self.bpm = bpm
        return self.bpm


def tick_period(times: list[float], ref: float) -> float | None:
    """Seconds per tick from arrival times, given a rough period `ref` (the median interval); see TickTempo.

    A gap is an interval over 1.6 periods; of ticks bunched closer than a quarter period, only the last is
    kept. Gaps are only told apart from noise while they are rare: when more than a
    fifth of the intervals look like gaps, the timing noise is as large as the period (very fast tempos on
    a coarse JACK period) and one run over the whole window is the better bet. A fit that strays more than
    15 % from the mean interval (which lost ticks bias by a few % at most) is not trusted."""
    t = np.asarray(times, dtype=np.float64) - times[0]
    d = np.diff(t)
    gaps = d > 1.6 * ref
    if gaps.sum() > 0.2 * len(gaps):
        gaps[:] = False
    # ticks delivered together were held up; the last of a bunch is the least late, so it alone stays
    keep = np.concatenate((d >= 0.25 * ref, [True]))
    runs = np.concatenate(([0], np.cumsum(gaps)))  # run id of each tick
    idx = np.zeros(len(t))
    for r in np.unique(runs):
        sel = runs == r
        idx[sel] = np.arange(sel.sum())
    mean_interval = t[-1] / (len(t) - 1)
    slope = None
    for _ in range(2):
        fit = _pooled_fit(idx, t, runs, keep)
        if fit is None:
            break
        slope, resid = fit
        mad = float(np.median(np.abs(resid[keep])))
        out = np.abs(resid) > max(4.0 * mad, 1e-4)
        if not out[keep].any() or (keep & ~out).sum() < 3:
            break
        keep &= ~out
    if slope is None or not 0.85 < slope / mean_interval < 1.15:
        return mean_interval
    return slope


def _pooled_fit(x: np.ndarray, y: np.ndarray, runs: np.ndarray, keep: np.ndarray):
    """One slope, one intercept per run; returns (slope, residuals of every point) or None if underdetermined."""
    xc, yc = np.zeros_like(x), np.zeros_like(y)
    for r in np.unique(runs[keep]):
        sel = (runs == r) & keep
        xc[runs == r] = x[runs == r] - x[sel].mean()
        yc[runs == r] = y[runs == r] - y[sel].mean()
    sxx = float((xc[keep] ** 2).sum())
    if sxx <= 0 or keep.sum() < 3:
        return None
    slope = float((xc[keep] * yc[keep]).sum()) / sxx
    return slope, yc - slope * xc


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
