"""JackBackend through a real JACK server: a second client records exactly what the ring fed it."""

import os
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest
from tone_through_jack import AMP, FREQS, check_recording, jack_ports, play_tone, rms
from waiting import wait_for

from lmdm_live.audio import (
    AudioRing,
    JackBackend,
    JackRecorder,
    ToneFeeder,
    dominant_hz,
    jack_server_running,
    open_backend,
)
from lmdm_live.audio.backend import BackendUnavailable

pytestmark = pytest.mark.jack


def _client_ports(server: str, prefix: str) -> list[str]:
    return [name for name in jack_ports(server) if name.startswith(prefix)]


def test_jack_backend_plays_the_ring_to_a_recording_client(jack_server):
    backend = JackBackend(client_name="lmdm-live", channels=2, connect=True, server_name=jack_server)
    rate, block = backend.sample_rate, backend.blocksize

    def started() -> list[str]:
        # connect=True: the dummy driver's playback ports are the physical ones
        assert backend.connections == {
            "lmdm-live:out_1": ["system:playback_1"],
            "lmdm-live:out_2": ["system:playback_2"],
        }
        return [p.name for p in backend.ports]

    played = play_tone(backend, jack_server, "lmdm-test-rec", started)

    played.print_figures("jack", backend)
    stats = backend.stats
    assert played.latency_s >= block / rate  # read while connected: what JACK reports downstream of our ports
    assert played.underruns_while_fed == 0, "the producer kept ahead, yet the callback ran dry"
    assert stats.callbacks >= 0.5 * played.elapsed_s * rate / block, "the process callback ran too rarely"
    assert 0 < stats.mean_ms <= stats.max_ms
    check_recording(played.fed, rate, played.reference, exact=played.xruns == 0)
    tail = played.recording[-block:]
    assert np.all(tail == 0.0), "after the ring ran dry the output must be silence"
    assert _client_ports(jack_server, "lmdm-live:") == [], "stop() must release the ports"


def test_connect_to_a_prefix_or_to_nothing(jack_server):
    sink = JackRecorder("lmdm-test-sink", 2, [], max_seconds=2, server_name=jack_server)
    sink.start()
    to_sink = JackBackend("lmdm-live-prefix", 2, connect="lmdm-test-sink:in_", server_name=jack_server)
    quiet = JackBackend("lmdm-live-quiet", 2, connect=False, server_name=jack_server)
    try:
        ring = AudioRing(2, to_sink.sample_rate)
        ToneFeeder(ring, to_sink.sample_rate, FREQS, amp=AMP).prime()  # 1 s, no feeder thread needed
        to_sink.start(ring)
        quiet.start(AudioRing(2, 1024))
        expected = {
            "lmdm-live-prefix:out_1": ["lmdm-test-sink:in_1"],
            "lmdm-live-prefix:out_2": ["lmdm-test-sink:in_2"],
        }
        # JACK shows a new connection to clients from the next cycle on
        assert wait_for(lambda: to_sink.connections == expected, 5.0), to_sink.connections
        assert quiet.connections == {"lmdm-live-quiet:out_1": [], "lmdm-live-quiet:out_2": []}
        assert wait_for(lambda: sink.frames >= to_sink.sample_rate // 2, 5.0)
        heard = sink.audio[: sink.frames]
        assert rms(heard[:, 1]) > 0.1, "nothing arrived through the prefix connection"
        with pytest.raises(BackendUnavailable, match="no JACK input ports start with"):
            JackBackend("lmdm-live-nowhere", 2, connect="no-such-client:", server_name=jack_server).start(
                AudioRing(2, 1024)
            )
    finally:
        to_sink.stop()
        quiet.stop()
        sink.stop()
    assert _client_ports(jack_server, "lmdm-live-nowhere:") == [], "a failed start must not leave a client"


def test_ports_are_connectable_before_start(jack_server):
    """Patching (a recorder, a patchbay) can happen before the engine starts: silence until start()."""
    backend = JackBackend("lmdm-live-early", 2, connect=False, server_name=jack_server)
    recorder = JackRecorder(
        "lmdm-test-early-rec", 2, [p.name for p in backend.ports], 3, server_name=jack_server
    )
    try:
        recorder.start()  # connects from ports of a backend that has not started
        assert wait_for(lambda: recorder.frames >= backend.sample_rate // 5, 5.0)
        before = recorder.frames
        assert np.all(recorder.audio[:before] == 0.0), "an unstarted backend must play silence"
        assert backend.stats.callbacks == 0  # timing counts only callbacks that play a ring
        ring = AudioRing(2, backend.sample_rate)
        ToneFeeder(ring, backend.sample_rate, FREQS, amp=AMP).prime()
        backend.start(ring)
        assert wait_for(lambda: recorder.frames >= before + backend.sample_rate // 2, 5.0)
        after = recorder.audio[before:].copy()
    finally:
        recorder.stop()
        backend.stop()
    assert rms(after[:, 0]) > 0.1, "the tone did not arrive after start()"


def test_stop_lets_the_process_thread_end_itself(jack_server):
    """Closing must not leave libjack to cancel a process thread inside Python: each client's callback
    thread is asked to leave and ends itself (CallbackExit) before deactivation, playing or recording."""
    backend = JackBackend("lmdm-live-leave", 2, connect=False, server_name=jack_server)
    recorder = JackRecorder(
        "lmdm-test-leave-rec", 2, [p.name for p in backend.ports], 3, server_name=jack_server
    )
    ring = AudioRing(2, backend.sample_rate)
    ToneFeeder(ring, backend.sample_rate, FREQS, amp=AMP).prime()
    backend.start(ring)
    recorder.start()
    assert wait_for(lambda: recorder.frames >= backend.sample_rate // 10, 5.0)
    for client in (recorder, backend):
        t0 = time.perf_counter()
        client.stop()
        assert client._left, f"{client.client.name}: the process thread was cancelled, not let go"
        assert time.perf_counter() - t0 < 1.0  # a cycle or two, plus the grace


def test_follows_a_block_size_change(jack_server):
    import jack

    backend = JackBackend("lmdm-live-bs", 2, connect=False, server_name=jack_server)
    admin = jack.Client("lmdm-test-admin", no_start_server=True, servername=jack_server)
    recorder = JackRecorder(
        "lmdm-test-bs-rec", 2, [p.name for p in backend.ports], 4, server_name=jack_server
    )
    ring = AudioRing(2, backend.sample_rate // 2)
    feeder = ToneFeeder(ring, backend.sample_rate, FREQS, amp=AMP)
    feeder.prime()
    feeder.start()
    old = admin.blocksize
    try:
        backend.start(ring)
        recorder.start()
        time.sleep(0.3)
        admin.blocksize = 2 * old
        assert wait_for(lambda: backend.blocksize == 2 * old, 5.0), "the block size change was not seen"
        mark = recorder.frames
        assert wait_for(lambda: recorder.frames >= mark + backend.sample_rate, 10.0)
        after = recorder.audio[mark:].copy()
    finally:
        admin.blocksize = old
        feeder.stop()
        recorder.stop()
        backend.stop()
        admin.close()
    assert backend.blocksize_changes >= 1 and backend.oversized_blocks == 0
    assert ring.underruns == 0
    for c, freq in enumerate(FREQS):
        assert rms(after[:, c]) == pytest.approx(AMP / np.sqrt(2), rel=0.05)
        assert dominant_hz(after[:, c], backend.sample_rate) == pytest.approx(freq, abs=2.0)


def test_open_backend_none_picks_jack_when_a_server_runs(jack_server):
    assert jack_server_running(jack_server)
    backend = open_backend(None, channels=2, client_name="lmdm-live-auto", blocksize=512)
    try:
        assert isinstance(backend, JackBackend) and backend.name == "jack"
        assert backend.sample_rate == 48000 and backend.channels == 2
    finally:
        backend.stop()
    with open_backend("jack", client_name="lmdm-live-explicit", server_name=jack_server) as explicit:
        assert isinstance(explicit, JackBackend)
    assert _client_ports(jack_server, "lmdm-live-explicit:") == []


def test_no_server_is_a_clear_error_and_never_starts_one(jack_server):
    assert not jack_server_running("lmdm-no-such-server")
    with pytest.raises(BackendUnavailable) as info:
        JackBackend(server_name="lmdm-no-such-server")
    assert "no JACK server" in str(info.value) and "\n" not in str(info.value)
    assert not jack_server_running("lmdm-no-such-server"), "probing must not have started a server"


def test_ring_channels_must_match(jack_server):
    with JackBackend("lmdm-live-mono", channels=1, connect=False, server_name=jack_server) as backend:
        with pytest.raises(ValueError):
            backend.start(AudioRing(2, 1024))


def test_recorder_with_a_missing_source_fails_and_releases_its_client(jack_server):
    import jack

    recorder = JackRecorder(
        "lmdm-test-badrec", 1, ["no-such-client:out"], max_seconds=1, server_name=jack_server
    )
    with pytest.raises(jack.JackError):
        recorder.start()
    assert _client_ports(jack_server, "lmdm-test-badrec:") == []


_DOOMED = """
import sys, time
from lmdm_live.audio.jack_backend import JackBackend, jack_server_running
from lmdm_live.audio.ring import AudioRing

def wait(pred, timeout):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.02)
    return pred()

assert wait(lambda: jack_server_running(sys.argv[1]), 20.0), "a second JACK server did not come up"
backend = JackBackend("lmdm-live-doomed", 2, connect=True, server_name=sys.argv[1])
backend.start(AudioRing(2, 4800))
assert wait(lambda: backend.stats.callbacks > 10, 5.0), "no callbacks"
print("running", flush=True)
sys.stdin.readline()  # the test kills the server, then says go on
assert wait(lambda: backend.server_shut_down, 5.0), "the server's shutdown was not noticed"
backend.stop()  # must not raise
backend.stop()
print("stopped", flush=True)
"""


def test_server_going_away_is_noticed_and_stop_still_works(jack_server):
    """A headless instrument must shut down cleanly even after JACK itself died under it.

    The client lives in its own process: libjack keeps per-process state about the servers it has talked
    to (PortAudio's JACK host API, opened by other tests, among them), and a second server in the same
    process is not something it handles reliably."""
    if shutil.which("jackd") is None:
        pytest.skip("jackd is not installed: cannot start a server to take away")
    name = f"lmdm-test-doomed-{os.getpid()}"
    cmd = ["jackd", "-n", name, "--no-realtime", "-d", "dummy", "-r", "48000", "-p", "256"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = None
    try:  # this process never talks to the doomed server: only the child does
        client = subprocess.Popen(
            [sys.executable, "-c", _DOOMED, name],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert client.stdout.readline().strip() == "running", client.stderr.read()
        proc.terminate()
        proc.wait(timeout=10)
        out, err = client.communicate("go\n", timeout=20)
        assert client.returncode == 0 and out.strip() == "stopped", err
    finally:
        if client is not None and client.poll() is None:
            client.kill()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
