"""Audio really flows through the private JACK server: a sine written to an output port arrives, through a
JACK connection, at an input port."""

import threading
import time

import numpy as np
import pytest

pytestmark = pytest.mark.jack

FREQ = 440.0
AMP = 0.5


def _record(lc: "LoopbackClient", seconds: float) -> np.ndarray:
    """Let the process callback run for `seconds` (wall clock) and return what the input port received."""
    time.sleep(seconds)
    return lc.recorded()


class LoopbackClient:
    """One JACK client with an output port that plays a sine and an input port that records."""

    def __init__(self, jack, server: str, seconds_max: float = 2.0):
        self.client = jack.Client("lmdm-test-loopback", no_start_server=True, servername=server)
        self.rate = self.client.samplerate
        self.out = self.client.outports.register("out")
        self.inp = self.client.inports.register("in")
        self.buf = np.zeros(int(seconds_max * self.rate), dtype=np.float32)
        self.written = 0  # frames of sine written so far (keeps the phase continuous)
        self.recorded_frames = 0
        self.recording = False
        self.cycles = 0
        self.lock = threading.Lock()
        self.client.set_process_callback(self._process)

    def _process(self, frames: int) -> None:
        t = (self.written + np.arange(frames)) / self.rate
        self.out.get_array()[:] = AMP * np.sin(2 * np.pi * FREQ * t)
        self.written += frames
        self.cycles += 1
        if self.recording:
            with self.lock:
                n = min(frames, len(self.buf) - self.recorded_frames)
                if n > 0:
                    self.buf[self.recorded_frames : self.recorded_frames + n] = self.inp.get_array()[:n]
                    self.recorded_frames += n

    def start_recording(self) -> None:
        with self.lock:
            self.recorded_frames = 0
            self.recording = True

    def recorded(self) -> np.ndarray:
        with self.lock:
            self.recording = False
            return self.buf[: self.recorded_frames].copy()


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))) if len(x) else 0.0


def test_sine_flows_from_output_to_input_port(jack_server):
    import jack

    lc = LoopbackClient(jack, jack_server)
    try:
        with lc.client:  # activates, deactivates and closes on exit
            # Not connected yet: the input port must be silent, so a signal later can only come through JACK.
            lc.start_recording()
            silent = _record(lc, 0.15)
            assert lc.cycles > 0, "the JACK process callback never ran"
            assert len(silent) > 0, "nothing was recorded from the unconnected input port"
            assert _rms(silent) < 1e-6, "the unconnected input port is not silent"

            lc.client.connect(lc.out, lc.inp)
            assert [p.name for p in lc.client.get_all_connections(lc.inp)] == [lc.out.name]
            time.sleep(0.05)  # let the connection take effect before recording
            lc.start_recording()
            got = _record(lc, 0.3)
    finally:
        lc.client.close()

    rate = lc.rate
    assert len(got) >= int(0.15 * rate), f"only {len(got)} frames recorded in 0.3 s at {rate} Hz"
    expected_rms = AMP / np.sqrt(2)
    assert _rms(got) == pytest.approx(expected_rms, rel=0.05), "the input port did not receive the sine"
    # Not just any signal: the received one is the 440 Hz sine.
    spectrum = np.abs(np.fft.rfft(got * np.hanning(len(got))))
    peak_hz = np.argmax(spectrum) * rate / len(got)
    assert peak_hz == pytest.approx(FREQ, abs=2 * rate / len(got) + 1.0)
