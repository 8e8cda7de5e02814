"""The tempo clock: one source at a time sets inst.bpm, rate-limited; MIDI-clock tempo estimation; Link is
optional and says how to get it."""

from __future__ import annotations

import asyncio
import importlib.util
import math
import random
import time

import pytest

from lmdm_live import Instrument
from lmdm_live.audio import FileBackend
from lmdm_live.control.clock import Clock, ClockSourceUnavailable, TickTempo
from lmdm_live.model.bundle import LMDMModel
from lmdm_live.model.lmdm import LMDMConfig

JACK_PERIOD_S = 256 / 48000


@pytest.fixture(scope="module")
def model():
    return LMDMModel.preset("tiny", lmdm=LMDMConfig(mode="causal", context_frames=16, block_frames=8))


@pytest.fixture
def inst(model, tmp_path):
    """A real instrument; its engine is not started, since only its tempo (the beat grid) matters here."""
    backend = FileBackend(tmp_path / "out.wav", model.sample_rate, realtime=True)
    i = Instrument(model, backend=backend, steps=2, quiet=True, start=False)
    yield i
    i.stop()


def jittered_ticks(
    bpm: float, n: int, jitter_s: float, seed: int = 0, lost: float = 0.0, delays: int = 0
) -> list[float]:
    """Tick arrival times as a JACK MIDI input sees them: jittered, some held up and delivered in a bunch,
    some lost (an xrun drops MIDI), rounded up to a 256-frame period."""
    rng = random.Random(seed)
    period = 60.0 / bpm / 24
    held = set(rng.sample(range(30, n - 5), delays))
    out, until = [], 0.0
    for i in range(n):
        t = 100.0 + i * period + rng.uniform(-jitter_s, jitter_s)
        if i in held:
            until = t + rng.uniform(0.02, 0.06)
        t = max(t, until)
        if rng.random() >= lost:
            out.append(math.ceil(t / JACK_PERIOD_S) * JACK_PERIOD_S)
    return sorted(out)


@pytest.mark.parametrize("bpm", [60.0, 93.0, 120.0, 174.0])
@pytest.mark.parametrize("lost, delays", [(0.0, 0), (0.0, 3), (0.02, 0), (0.02, 3)])
def test_tick_tempo_is_within_a_bpm_despite_jitter_late_and_lost_ticks(bpm, lost, delays):
    worst = 0.0
    for seed in range(4):
        tempo = TickTempo()
        times = jittered_ticks(bpm, 24 * 8, jitter_s=0.002, seed=seed, lost=lost, delays=delays)
        for t in times:
            est = tempo.tick(t)
            if t - times[0] > 3 * 60.0 / bpm:  # after three beats
                worst = max(worst, abs(est - bpm))
    assert worst < 1.0, worst


def test_tick_tempo_needs_a_beat_and_beats_the_raw_intervals():
    times = jittered_ticks(120.0, 24 * 4, jitter_s=0.002, lost=0.02, delays=1)
    tempo = TickTempo()
    estimates = [tempo.tick(t) for t in times]
    assert estimates[:23] == [None] * 23 and estimates[23] is not None
    # single tick intervals are far noisier than the estimate: this is what the fit buys
    raw = [60.0 / ((b - a) * 24) for a, b in zip(times, times[1:]) if b > a]
    assert max(abs(r - 120.0) for r in raw) > 20.0 and abs(estimates[-1] - 120.0) < 1.0


def test_tick_tempo_follows_a_change_and_restarts_after_a_pause():
    tempo = TickTempo()
    t = 0.0
    for _ in range(24 * 4):
        t += 60.0 / 100 / 24
        tempo.tick(t)
    assert tempo.bpm == pytest.approx(100, abs=0.01)
    for _ in range(24 * 4):  # four beats at the new tempo replace the whole window
        t += 60.0 / 140 / 24
        tempo.tick(t)
    assert tempo.bpm == pytest.approx(140, abs=0.01)
    t += 2.0  # the clock stopped for two seconds
    tempo.tick(t)
    assert len(tempo.times) == 1  # the old ticks are forgotten, the last estimate is kept until a new one


def test_only_the_active_source_sets_bpm(inst):
    clock = Clock(inst)
    assert clock.source == "internal" and inst.bpm() == 120.0
    clock.midi(100.0, beat=0.0)
    clock.tidal(0.55, cycle=3.0)  # 132 bpm at 4 beats per cycle
    assert inst.bpm() == 120.0  # neither is the active source
    assert clock.bpm_sets == 0

    clock.use("tidal")
    assert inst.bpm() == pytest.approx(132.0) and clock.bpm == pytest.approx(132.0)
    clock.midi(101.0)
    assert inst.bpm() == pytest.approx(132.0)

    clock.use("midi")
    assert inst.bpm() == pytest.approx(101.0)  # its last report applies on switching, without waiting
    with pytest.raises(ValueError, match="follows the midi clock"):
        clock.internal(90.0)
    assert inst.bpm() == pytest.approx(101.0)

    clock.use("internal")
    assert inst.bpm() == pytest.approx(101.0)  # switching back keeps the tempo where it was
    clock.internal(90.0)
    assert inst.bpm() == 90.0
    clock.midi(150.0)
    clock.tidal(0.3)
    assert inst.bpm() == 90.0


def test_bad_source_input_is_refused_and_changes_nothing(inst):
    clock = Clock(inst, "tidal")
    clock.tidal(0.5, cycle=1.0)
    assert inst.bpm() == 120.0
    for bad in (
        lambda: clock.tidal(0),
        lambda: clock.tidal(-1),
        lambda: clock.tidal(10.0),  # 2400 bpm
        lambda: clock.tidal(float("nan")),
        lambda: clock.tidal("fast"),
        lambda: clock.tidal(0.5, cycle=float("inf")),
        lambda: clock.midi(5.0),
        lambda: clock.use("sundial"),
    ):
        with pytest.raises(ValueError):
            bad()
    assert clock.source == "tidal" and inst.bpm() == 120.0 and clock.reports["tidal"].beat == 4.0


def test_beat_phase_extrapolates_from_the_active_source(inst):
    clock = Clock(inst, "tidal")
    t = time.monotonic()
    clock.tidal(0.5, cycle=2.25, at=t)  # 120 bpm, cycle 2.25 = beat 9 at t
    assert clock.beat(t) == pytest.approx(9.0)
    assert clock.beat_phase(t + 0.25) == pytest.approx(0.5)  # 2 beats per second
    assert clock.beat_phase(t + 0.6) == pytest.approx(0.2)

    clock.use("internal")  # the internal beat runs on from where tidal had it
    now = time.monotonic()
    assert clock.beat(now) == pytest.approx(9.0 + (now - t) * 2.0, abs=0.05)
    inst.bpm(60.0)  # a tempo change keeps the beat continuous
    b = clock.beat()
    assert clock.beat(time.monotonic() + 1.0) == pytest.approx(b + 1.0, abs=0.05)


def test_bpm_changes_are_rate_limited_and_the_last_one_lands(inst):
    async def scenario():
        clock = Clock(inst, "midi", min_interval_s=0.25)
        t0 = time.monotonic()
        for i in range(400):  # a jittery source reporting far faster than the engine needs
            clock.midi(100.0 + (i % 7))
            await asyncio.sleep(0)
        clock.midi(111.0)
        elapsed = time.monotonic() - t0
        sets_during = clock.bpm_sets
        await asyncio.sleep(0.4)  # the held-back last value is applied when its interval ends
        return elapsed, sets_during, clock

    elapsed, sets_during, clock = asyncio.run(scenario())
    assert sets_during <= elapsed / 0.25 + 2, (sets_during, elapsed)
    assert inst.bpm() == 111.0
    assert clock.bpm_sets <= sets_during + 1


def test_small_wobble_does_not_reach_the_instrument(inst):
    clock = Clock(inst, "midi", min_interval_s=0.0, min_delta_bpm=0.1)
    clock.midi(120.04)
    clock.midi(119.97)
    assert clock.bpm_sets == 0 and inst.bpm() == 120.0
    clock.midi(121.0)
    assert clock.bpm_sets == 1 and inst.bpm() == 121.0


@pytest.mark.skipif(importlib.util.find_spec("aalink") is not None, reason="aalink is installed here")
def test_link_without_aalink_names_the_install_and_keeps_the_source(inst):
    async def scenario():
        clock = Clock(inst, "midi")
        clock.midi(100.0)
        with pytest.raises(ClockSourceUnavailable, match="pip install aalink"):
            clock.use("link")
        return clock

    clock = asyncio.run(scenario())
    assert clock.source == "midi" and inst.bpm() == 100.0
    with pytest.raises(ValueError, match="clock.use"):
        Clock(inst, "link")
