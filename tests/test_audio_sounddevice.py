"""SoundDeviceBackend through PortAudio's JACK host API: a JACK client records exactly what the ring fed."""

import re
import time

import numpy as np
import pytest

from lmdm_live.audio import (
    AudioRing,
    JackRecorder,
    SoundDeviceBackend,
    ToneFeeder,
    find_output_device,
    output_devices,
    rescan_devices,
    sine_frames,
)
from lmdm_live.audio.backend import BackendUnavailable

pytestmark = pytest.mark.jack

FREQS = (440.0, 660.0)
AMP = 0.5
SECONDS = 2.5


def _wait_for(cond, timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.01)
    return cond()


@pytest.fixture(scope="module")
def jack_hostapi(jack_server):
    """PortAudio's JACK host API, listing the running server's device. Fails (with the reason) if absent."""
    import sounddevice as sd

    if not output_devices("JACK"):
        rescan_devices()  # PortAudio only sees servers that ran when it was initialised
    apis = [h["name"] for h in sd.query_hostapis()]
    if not any("JACK" in a for a in apis):
        pytest.fail(
            f"this PortAudio build has no JACK host API (host APIs: {apis}; {sd.get_portaudio_version()})"
        )
    if not output_devices("JACK"):
        pytest.fail(f"PortAudio's JACK host API lists no output device although server {jack_server!r} runs")
    return "JACK"


def _portaudio_out_ports(server: str, before: set[str]) -> list[str]:
    """The output ports PortAudio's JACK client registered (when our stream opened), in channel order."""
    import jack

    probe = jack.Client("lmdm-test-probe", no_start_server=True, servername=server)
    try:
        new = [p.name for p in probe.get_ports(is_output=True, is_audio=True) if p.name not in before]
    finally:
        probe.close()
    return sorted(new, key=lambda name: int(re.search(r"(\d+)$", name).group(1)))


def _all_ports(server: str) -> set[str]:
    import jack

    probe = jack.Client("lmdm-test-probe", no_start_server=True, servername=server)
    try:
        return {p.name for p in probe.get_ports()}
    finally:
        probe.close()


def test_sounddevice_backend_plays_through_jack(jack_server, jack_hostapi):
    from test_audio_jack import check_recording

    before = _all_ports(jack_server)
    backend = SoundDeviceBackend(blocksize=256, latency="low", channels=2, hostapi=jack_hostapi)
    assert backend.hostapi_name == "JACK Audio Connection Kit"
    rate = backend.sample_rate
    assert rate == 48000  # PortAudio's JACK device runs at the server's rate
    ring = AudioRing(2, rate // 2)
    feeder = ToneFeeder(ring, rate, FREQS, amp=AMP)
    feeder.prime()
    feeder.start()
    recorder = None
    try:
        t0 = time.perf_counter()
        backend.start(ring)
        sources = _portaudio_out_ports(jack_server, before)
        assert len(sources) == 2, f"PortAudio's JACK client did not register 2 output ports: {sources}"
        recorder = JackRecorder(
            "lmdm-test-sd-rec", 2, sources, max_seconds=SECONDS + 2, server_name=jack_server
        )
        recorder.start()
        fed_frames = int(SECONDS * rate)
        assert _wait_for(lambda: recorder.frames >= fed_frames, 4 * SECONDS + 5), "the recorder got no audio"
        feeder.stop()
        underruns_while_fed, fill_min_fed = ring.underruns, ring.fill_min
        fed = recorder.audio[:fed_frames].copy()
        xruns = backend.xruns + recorder.xruns
        assert _wait_for(lambda: ring.underruns > 0, 3.0), "an empty ring did not count as an underrun"
        time.sleep(0.1)
        elapsed = time.perf_counter() - t0
        latency_s = backend.output_latency_s
        recorder.stop()
    finally:
        feeder.stop()
        if recorder is not None:
            recorder.stop()
        backend.stop()

    stats = backend.stats
    print(
        f"\n[sounddevice/JACK] {rate} Hz, block {backend.blocksize}: {stats.callbacks} callbacks, mean "
        f"{stats.mean_ms:.3f} ms, max {stats.max_ms:.3f} ms; xruns {xruns}; ring fill_min {fill_min_fed} "
        f"frames; output latency {latency_s * 1000:.1f} ms"
    )
    assert underruns_while_fed == 0, "the producer kept ahead, yet the callback ran dry"
    assert stats.callbacks >= 0.5 * elapsed * rate / backend.blocksize
    assert 0 < latency_s < 1.0
    check_recording(fed, rate, sine_frames(0, feeder.frames, rate, FREQS, AMP), exact=xruns == 0)
    assert np.all(recorder.audio[-256:] == 0.0), "after the ring ran dry the output must be silence"


def test_device_choice_and_clear_errors(jack_server, jack_hostapi):
    dev = find_output_device(None, jack_hostapi)
    assert dev["max_output_channels"] >= 2
    assert find_output_device(dev["index"])["index"] == dev["index"]
    assert find_output_device(dev["name"][:3].upper(), jack_hostapi)["index"] == dev["index"]  # name part
    assert SoundDeviceBackend.available(hostapi=jack_hostapi)
    for bad in ("no-such-device-xyz", 9999):
        with pytest.raises(BackendUnavailable) as info:
            SoundDeviceBackend(device=bad)
        msg = str(info.value)
        assert "no output device" in msg and "\n" not in msg and dev["name"] in msg  # says what there is
    with pytest.raises(BackendUnavailable, match="channels"):
        SoundDeviceBackend(device=dev["index"], channels=dev["max_output_channels"] + 1)
    with SoundDeviceBackend(device=dev["name"], hostapi=jack_hostapi) as backend:
        with pytest.raises(ValueError):
            backend.start(AudioRing(1, 1024))


def test_open_backend_none_falls_back_to_sounddevice_without_jack(jack_server, jack_hostapi, monkeypatch):
    from lmdm_live.audio import JackBackend, open_backend

    monkeypatch.setattr(JackBackend, "available", classmethod(lambda cls, **kw: False))  # as if no server
    backend = open_backend(None, channels=2, hostapi=jack_hostapi, client_name="unused-by-sounddevice")
    try:
        assert isinstance(backend, SoundDeviceBackend) and backend.name == "sounddevice"
    finally:
        backend.stop()
