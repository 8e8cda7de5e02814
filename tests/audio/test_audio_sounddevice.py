"""SoundDeviceBackend through PortAudio's JACK host API: a JACK client records exactly what the ring fed."""

import re

import numpy as np
import pytest
from tone_through_jack import check_recording, jack_ports, play_tone

from lmdm_live.audio import (
    AudioRing,
    SoundDeviceBackend,
    find_output_device,
    output_devices,
    rescan_devices,
)
from lmdm_live.audio.backend import BackendUnavailable

pytestmark = pytest.mark.jack


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
    new = [name for name in jack_ports(server, is_output=True, is_audio=True) if name not in before]
    return sorted(new, key=lambda name: int(re.search(r"(\d+)$", name).group(1)))


def test_sounddevice_backend_plays_through_jack(jack_server, jack_hostapi):
    before = set(jack_ports(jack_server))
    backend = SoundDeviceBackend(blocksize=256, latency="low", channels=2, hostapi=jack_hostapi)
    assert backend.hostapi_name == "JACK Audio Connection Kit"
    rate = backend.sample_rate
    assert rate == 48000  # PortAudio's JACK device runs at the server's rate

    def started() -> list[str]:
        sources = _portaudio_out_ports(jack_server, before)
        assert len(sources) == 2, f"PortAudio's JACK client did not register 2 output ports: {sources}"
        return sources

    played = play_tone(backend, jack_server, "lmdm-test-sd-rec", started)

    played.print_figures("sounddevice/JACK", backend)
    assert played.underruns_while_fed == 0, "the producer kept ahead, yet the callback ran dry"
    assert backend.stats.callbacks >= 0.5 * played.elapsed_s * rate / backend.blocksize
    assert 0 < played.latency_s < 1.0
    check_recording(played.fed, rate, played.reference, exact=played.xruns == 0)
    assert np.all(played.recording[-256:] == 0.0), "after the ring ran dry the output must be silence"


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
