"""A known tone played through an output backend and recorded by a JACK client of the test's own.

Every backend that reaches JACK (JackBackend directly, SoundDeviceBackend through PortAudio's JACK host API)
is judged the same way: what the recorder got must be the tone that was fed into the ring, and once the ring
runs dry the backend must count underruns and play silence.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytest
from waiting import wait_for

from lmdm_live.audio import (
    AudioBackend,
    AudioRing,
    JackRecorder,
    ToneFeeder,
    dominant_hz,
    locate,
    sine_frames,
)

FREQS = (440.0, 660.0)  # one per channel, so a swapped or merged channel shows
AMP = 0.5
SECONDS = 2.5


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))) if len(x) else 0.0


def jack_ports(server: str, **filters: bool) -> list[str]:
    """The names of the ports on `server` (filtered as jack.Client.get_ports does), seen by a short-lived
    client of its own, so that the check never depends on the clients under test."""
    import jack

    probe = jack.Client("lmdm-test-probe", no_start_server=True, servername=server)
    try:
        return [p.name for p in probe.get_ports(**filters)]
    finally:
        probe.close()


def check_recording(audio: np.ndarray, rate: int, reference: np.ndarray, exact: bool) -> None:
    """The recording is the tone: finite, loud enough, right frequency per channel, and (when no xrun
    disturbed the graph) a sample-exact contiguous stretch of what was fed into the ring."""
    assert len(audio) >= rate, f"only {len(audio)} frames recorded"
    assert np.all(np.isfinite(audio)), "the recording has NaN or inf"
    start = int(np.argmax(np.any(audio != 0.0, axis=1)))  # skip silence before the connection took effect
    body = audio[start:]
    assert len(body) >= rate, "the recording is (almost) all silence: audio did not flow"
    for c, freq in enumerate(FREQS):
        assert rms(body[:, c]) == pytest.approx(AMP / np.sqrt(2), rel=0.05), f"channel {c + 1} level"
        assert dominant_hz(body[:, c], rate) == pytest.approx(freq, abs=2.0), f"channel {c + 1} frequency"
    offset = locate(reference, body)
    if exact:
        assert offset is not None, "the recording is not a contiguous, unaltered stretch of the fed signal"
    elif offset is None:
        warnings.warn("xruns on a busy machine: recording checked by level and frequency only", stacklevel=2)


@dataclass
class PlayedTone:
    """What came of playing the tone: the test judges it once every client is gone."""

    fed: np.ndarray  # the first SECONDS recorded, while the ring was being fed
    reference: np.ndarray  # all that was fed into the ring
    recording: np.ndarray  # all that was recorded, the silence after the ring ran dry included
    underruns_while_fed: int
    fill_min_fed: int  # the ring's lowest fill (frames) while it was fed
    xruns: int  # the backend's and the recorder's together
    latency_s: float  # the backend's output latency, read as soon as it started
    elapsed_s: float  # from starting the backend to the end of the recording

    def print_figures(self, label: str, backend: AudioBackend) -> None:
        """The run's timing figures in the test log, to compare machines and runs by."""
        stats = backend.stats
        print(
            f"\n[{label}] {backend.sample_rate} Hz, block {backend.blocksize}: {stats.callbacks} callbacks, "
            f"mean {stats.mean_ms:.3f} ms, max {stats.max_ms:.3f} ms; xruns {self.xruns}; ring fill_min "
            f"{self.fill_min_fed} frames; output latency {self.latency_s * 1000:.1f} ms"
        )


def play_tone(
    backend: AudioBackend, server: str, recorder_name: str, started: Callable[[], list[str]]
) -> PlayedTone:
    """Feed the tone into a ring the backend plays, record it, then starve the ring until it counts an
    underrun. `started()` runs once the backend plays (for checks that need it running) and names the ports
    to record; the backend is stopped on the way out, whatever happened."""
    rate = backend.sample_rate
    ring = AudioRing(2, rate // 2)  # 0.5 s of headroom
    feeder = ToneFeeder(ring, rate, FREQS, amp=AMP)
    feeder.prime()
    feeder.start()
    recorder = None
    try:
        t0 = time.perf_counter()
        backend.start(ring)
        latency_s = backend.output_latency_s
        sources = started()
        recorder = JackRecorder(recorder_name, 2, sources, max_seconds=SECONDS + 2, server_name=server)
        recorder.start()
        fed_frames = int(SECONDS * rate)
        assert wait_for(lambda: recorder.frames >= fed_frames, 4 * SECONDS + 5), "the recorder got no audio"
        feeder.stop()
        underruns_while_fed, fill_min_fed = ring.underruns, ring.fill_min
        fed = recorder.audio[:fed_frames].copy()
        xruns = backend.xruns + recorder.xruns
        # Now starve it: the callback must play silence and count underruns.
        assert wait_for(lambda: ring.underruns > 0, 3.0), "an empty ring did not count as an underrun"
        time.sleep(0.1)
        elapsed_s = time.perf_counter() - t0
        recorder.stop()
    finally:
        feeder.stop()
        if recorder is not None:
            recorder.stop()
        backend.stop()
    reference = sine_frames(0, feeder.frames, rate, FREQS, AMP)
    return PlayedTone(
        fed, reference, recorder.audio, underruns_while_fed, fill_min_fed, xruns, latency_s, elapsed_s
    )
