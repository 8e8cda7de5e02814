"""Live audio input: a player in another process plays a known signal into our input ports through the
private JACK server; what `JackInput` / `SoundDeviceInput` deliver must be that signal, in order, at the
model's rate, and at the place on JACK's clock the player put it."""

import json
import re
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import soundfile

from lmdm_live.audio.backend import BackendUnavailable
from lmdm_live.audio.devices import open_input
from lmdm_live.audio.file_backend import FileInput
from lmdm_live.audio.input import downmix, match_ports
from lmdm_live.audio.jack_backend import JackInput
from lmdm_live.audio.resample import StreamResampler
from lmdm_live.audio.sd_backend import SoundDeviceInput

PLAYER = Path(__file__).parents[1] / "support" / "jack_play.py"
DEVICE_RATE = 48000  # the private server's rate


def _noise(frames: int, channels: int, seed: int = 0) -> np.ndarray:
    """Every sample distinct and non-zero: a dropped, repeated or swapped sample shows."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(0.05, 0.5, (frames, channels)) * rng.choice([-1.0, 1.0], (frames, channels))
    return x.astype(np.float32)


def _chirp(t: np.ndarray, f0: float = 100.0, f1: float = 6000.0, seconds: float = 1.0) -> np.ndarray:
    """A linear chirp with raised-cosine ends, a function of time in seconds (0 outside [0, seconds])."""
    k = (f1 - f0) / seconds
    x = 0.5 * np.sin(2 * np.pi * (f0 * t + 0.5 * k * t * t))
    ramp = 0.05
    env = np.clip(np.minimum(t, seconds - t) / ramp, 0.0, 1.0)
    return np.where((t >= 0) & (t <= seconds), x * 0.5 * (1 - np.cos(np.pi * env)), 0.0)


class Player:
    """tests/support/jack_play.py in its own process: its ports exist once constructed, it plays on `go()`."""

    def __init__(self, tmp_path: Path, name: str, signal: np.ndarray, dests: list[str] = ()) -> None:
        self.path = tmp_path / f"{name}.npy"
        np.save(self.path, signal.astype(np.float32))
        self.name = name
        self.proc = subprocess.Popen(
            [sys.executable, str(PLAYER), name, str(self.path), *dests],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        line = self.proc.stdout.readline().strip()
        if line != "ready":
            self.proc.kill()
            pytest.fail(f"the player did not start (said {line!r}, exit {self.proc.poll()})")

    def go(self) -> dict:
        """Play the signal; return the player's report once it is done."""
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()
        rc = self.proc.wait(timeout=20)
        assert rc == 0, "the player did not finish its signal"
        return json.loads(Path(str(self.path) + ".json").read_text())

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def _check_in_place(got: np.ndarray, signal: np.ndarray, offset: int, lost: int, xruns: int) -> None:
    """`got` (frames, channels) is silence, then `signal` from `offset` on, then silence. Where frames were
    lost, at most `lost` of them, they are silence: never shifted or altered.

    A JACK xrun (a busy machine) may also hand on a late client's stale buffer, which no client can see:
    up to a period per xrun may then hold something else."""
    assert 0 <= offset and offset + len(signal) <= len(got)
    body = got[offset : offset + len(signal)]
    bad = np.any(body != signal, axis=1)
    stale = int(np.any(body[bad] != 0, axis=1).sum())
    if xruns:
        warnings.warn(f"{xruns} JACK xruns: {bad.sum()} of {len(signal)} frames not in place", stacklevel=2)
    assert stale <= 256 * xruns, f"{stale} frames are neither the signal in its place nor lost (silent)"
    assert bad.sum() <= lost + 256 * xruns, f"{bad.sum()} frames differ, {lost} were lost"
    if not xruns:
        assert not got[:offset].any(), "something before the signal"
        assert not got[offset + len(signal) :].any(), "something after the signal"


def _in_order(got: np.ndarray, signal: np.ndarray) -> tuple[float, float]:
    """Which signal frame each delivered frame is (every signal frame is distinct): the share of the signal
    that arrived, and the share of steps between arrived frames that go forward."""
    where = {row.tobytes(): i for i, row in enumerate(signal)}
    idx = np.array([where.get(row.tobytes(), -1) for row in got])
    found = idx[idx >= 0]
    return len(np.unique(found)) / len(signal), float(np.mean(np.diff(found) > 0)) if len(found) > 1 else 0.0


def _drain(inp, min_frames: int, timeout: float = 5.0) -> np.ndarray:
    """Everything `inp` delivers once it has at least `min_frames`, (channels, n)."""
    got = inp.read(min_frames, timeout=timeout)
    assert got is not None, f"only {inp.available} of {min_frames} samples arrived"
    rest = inp.read(inp.available)
    return np.concatenate([got, rest], axis=1)


# --- pure parts -----------------------------------------------------------------------------------


def test_downmix_averages_and_repeats():
    x = np.array([[1.0, 3.0, 5.0, 7.0]], dtype=np.float32)
    assert downmix(x, 1).tolist() == [[4.0]]
    assert downmix(x, 2).tolist() == [[3.0, 5.0]]
    assert downmix(x[:, :1], 2).tolist() == [[1.0, 1.0]]
    assert downmix(x, 4) is x


def test_match_ports_name_glob_regex():
    names = ["sc:out_10", "sc:out_2", "sc:out_1", "system:capture_1", "system:capture_2"]
    assert match_ports(names, "sc:out_2") == ["sc:out_2"]
    assert match_ports(names, "sc:out_*") == ["sc:out_1", "sc:out_2", "sc:out_10"]
    assert match_ports(names, r"system:capture_[12]") == ["system:capture_1", "system:capture_2"]
    assert match_ports(names, r"sc:out_\d") == ["sc:out_1", "sc:out_2"]
    assert match_ports(names, "nope") == []


# --- JACK -----------------------------------------------------------------------------------------


@pytest.mark.jack
def test_jack_input_delivers_the_signal_exactly_at_its_frame_time(jack_server, tmp_path):
    signal = _noise(DEVICE_RATE, 2)  # 1 s, stereo
    player = Player(tmp_path, "lmdm-test-play", signal)
    inp = None
    try:
        inp = JackInput(DEVICE_RATE, 2, connect=["lmdm-test-play:out_*"], client_name="lmdm-test-in")
        assert inp.sources == ["lmdm-test-play:out_1", "lmdm-test-play:out_2"]
        inp.start()
        assert inp.connections == {
            "lmdm-test-in:in_1": ["lmdm-test-play:out_1"],
            "lmdm-test-in:in_2": ["lmdm-test-play:out_2"],
        }
        report = player.go()
        got = _drain(inp, 1).T
    finally:
        player.close()
        if inp is not None:
            inp.stop()
    assert inp.overruns == 0 and inp.callback_errors == 0
    # JACK's frame time places the signal: the player's first frame is input sample `offset`.
    offset = report["first"] - inp.first_frame_time
    assert inp.frame_time(offset) == report["first"]
    print(
        f"\n[JackInput 48k] {len(got)} samples, signal at sample {offset}, xruns {inp.xruns}+{report['xruns']}, "
        f"lost {inp.lost_frames}+{report['skipped']} frames"
    )
    _check_in_place(got, signal, offset, inp.lost_frames + report["skipped"], inp.xruns + report["xruns"])


@pytest.mark.jack
@pytest.mark.parametrize("model_rate", [16000, 44100])
def test_jack_input_resamples_and_downmixes_in_time(jack_server, tmp_path, model_rate):
    seconds = 1.0
    t = np.arange(int(seconds * DEVICE_RATE)) / DEVICE_RATE
    chirp = _chirp(t, seconds=seconds)
    signal = np.stack([chirp, chirp], axis=1)  # stereo in, mono out: the downmix is the chirp again
    inp = JackInput(model_rate, 1, connect=False, client_name="lmdm-test-in", ports=2)
    player = Player(tmp_path, "lmdm-test-play", signal, dests=[p.name for p in inp.ports])
    try:
        inp.start()
        report = player.go()
        got = _drain(inp, 1)[0]
    finally:
        player.close()
        inp.stop()
    assert inp.overruns == 0 and inp.callback_errors == 0
    # Each delivered sample k is compared with the chirp at the time frame_time(k) says it was captured.
    when = (inp.frame_time(np.arange(len(got))) - report["first"]) / DEVICE_RATE
    expected = _chirp(when, seconds=seconds)
    inside = (when > 0) & (when < seconds)
    assert inside.sum() >= 0.95 * seconds * model_rate, "the chirp did not arrive"
    r = float(np.corrcoef(got[inside], expected[inside])[0, 1])
    err = float(np.sqrt(np.mean((got[inside] - expected[inside]) ** 2)))
    print(f"\n[JackInput 48k -> {model_rate}] r = {r:.5f}, rms error {err:.2e}, xruns {inp.xruns}")
    if r < 0.99 and (inp.xruns or report["xruns"]):
        # Lost periods are silence where the chirp was; every 20 ms window they spared must still match.
        win = model_rate // 50
        g, e = got[inside], expected[inside]
        rs = [np.corrcoef(g[i : i + win], e[i : i + win])[0, 1] for i in range(0, len(g) - win, win)]
        warnings.warn(f"JACK xruns: r {r:.3f}, median r of 20 ms windows {np.median(rs):.4f}", stacklevel=1)
        assert np.median(rs) >= 0.99
    else:
        assert r >= 0.99


@pytest.mark.jack
def test_jack_input_overruns_are_counted_and_keep_the_timeline(jack_server):
    inp = JackInput(DEVICE_RATE, 1, connect=False, client_name="lmdm-test-in", buffer_s=0.01)
    try:
        inp.start()
        capacity = inp.ring.capacity
        deadline = time.monotonic() + 5
        while inp.overruns < 3 and time.monotonic() < deadline:
            time.sleep(0.05)  # nobody reads: the ring fills, then callbacks drop
        assert inp.read(inp.available) is not None  # room again: the next block carries the gap
        time.sleep(0.1)
    finally:
        inp.stop()
    assert inp.overruns >= 3 and inp.overrun_frames >= 3 * inp.client.blocksize
    delivered = inp.available + inp.frames_read
    # Every device frame since the first is there, as audio or as silence where it was lost.
    assert delivered + inp._pending_gap == inp._next_time - inp.first_frame_time
    assert delivered > capacity + inp.overrun_frames
    print(f"\n[JackInput overrun] {inp.overruns} overruns, {inp.lost_frames} frames refilled with silence")


@pytest.mark.jack
def test_jack_input_reads_in_order_while_playing(jack_server, tmp_path):
    """A reader taking small blocks as they come sees the same samples as one reading at the end."""
    signal = _noise(DEVICE_RATE // 2, 1, seed=3)
    inp = JackInput(DEVICE_RATE, 1, connect=False, client_name="lmdm-test-in")
    player = Player(tmp_path, "lmdm-test-play", signal, dests=[inp.ports[0].name])
    blocks = []
    try:
        inp.start()
        assert inp.read(10**6) is None  # not there: nothing consumed, no wait
        player.proc.stdin.write("go\n")
        player.proc.stdin.flush()
        while player.proc.poll() is None:
            b = inp.read(300, timeout=0.5)
            if b is not None:
                blocks.append(b)
        report = json.loads(Path(str(player.path) + ".json").read_text())
        blocks.append(inp.read(inp.available, timeout=0))
    finally:
        player.close()
        inp.stop()
    got = np.concatenate(blocks, axis=1)[0]
    assert len(got) == inp.frames_read
    offset = report["first"] - inp.first_frame_time
    lost = inp.lost_frames + report["skipped"]
    _check_in_place(got[:, None], signal, offset, lost, inp.xruns + report["xruns"])
    assert inp.overruns == 0


@pytest.mark.jack
def test_jack_input_read_latest(jack_server):
    inp = JackInput(DEVICE_RATE, 1, connect=False, client_name="lmdm-test-in")
    try:
        inp.start()
        assert inp.read(4800, timeout=3) is not None
        time.sleep(0.2)
        latest = inp.read_latest(1000)
        assert latest.shape == (1, 1000) and latest.dtype == np.float32
        assert inp.available < 1000  # everything older went with it
    finally:
        inp.stop()


@pytest.mark.jack
def test_jack_input_unknown_source_is_one_line(jack_server):
    with pytest.raises(BackendUnavailable, match="no JACK output port matches 'nobody:out_\\*'"):
        JackInput(DEVICE_RATE, 1, connect=["nobody:out_*"], client_name="lmdm-test-in")


# --- sounddevice (PortAudio's JACK host API) --------------------------------------------------------


@pytest.mark.jack
def test_sounddevice_input_through_jack(jack_server, tmp_path):
    import jack

    from lmdm_live.audio import rescan_devices
    from lmdm_live.audio.sd_backend import input_devices

    if not input_devices("JACK"):
        rescan_devices()  # PortAudio only sees servers that ran when it was initialised
    if not input_devices("JACK"):
        pytest.fail("PortAudio's JACK host API lists no input device although the server runs")
    probe = jack.Client("lmdm-test-probe", no_start_server=True, servername=jack_server)
    before = {p.name for p in probe.get_ports()}
    signal = _noise(DEVICE_RATE, 2, seed=5)
    # read only once the player is done: room for its start, which on a busy machine took over the 2 s default
    inp = SoundDeviceInput(DEVICE_RATE, 2, hostapi="JACK", blocksize=256, buffer_s=30.0)
    player = None
    try:
        inp.start()
        ours = [p.name for p in probe.get_ports(is_input=True, is_audio=True) if p.name not in before]
        ours.sort(key=lambda n: int(re.search(r"(\d+)$", n).group(1)))
        assert len(ours) == 2, f"PortAudio registered input ports {ours}"
        for port in ours:  # only the player feeds them (PortAudio may have connected the capture ports)
            for src in probe.get_all_connections(port):
                probe.disconnect(src, port)
        player = Player(tmp_path, "lmdm-test-play", signal, dests=ours)
        report = player.go()
        got = _drain(inp, 1).T
    finally:
        if player is not None:
            player.close()
        inp.stop()
        probe.close()
    start = int(np.argmax(np.any(got != 0.0, axis=1)))
    print(
        f"\n[SoundDeviceInput JACK] {len(got)} samples, signal at {start}, block {inp.blocksize}, "
        f"overruns {inp.overruns}, lost {inp.lost_frames}, xruns {inp.xruns}+{report['xruns']}"
    )
    assert inp.overruns == 0 and inp.callback_errors == 0
    assert len(got) - start >= len(signal)
    if inp.xruns or report["xruns"]:
        arrived, forward = _in_order(got, signal)
        warnings.warn(
            f"JACK xruns: {arrived:.1%} of the signal arrived, {forward:.1%} in order", stacklevel=1
        )
        assert arrived >= 0.8 and forward >= 0.99
    else:
        np.testing.assert_array_equal(got[start : start + len(signal)], signal)
        assert not got[start + len(signal) :].any()
    assert inp.first_frame_time is not None


# --- file -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt,subtype", [("WAV", "FLOAT"), ("FLAC", "PCM_16")])
def test_file_input_reads_exactly_the_file(tmp_path, fmt, subtype):
    data = _noise(12345, 2, seed=7)
    if subtype == "PCM_16":
        data = np.round(data * 32767) / 32768  # what 16 bits hold
    path = tmp_path / f"x.{fmt.lower()}"
    soundfile.write(path, data, 48000, format=fmt, subtype=subtype)
    inp = open_input(str(path), 48000, channels=2)
    assert isinstance(inp, FileInput) and inp.available == len(data)
    inp.start()
    a = inp.read(1000)
    b = inp.read(len(data) - 1000)
    np.testing.assert_array_equal(np.concatenate([a, b], axis=1).T, data.astype(np.float32))
    assert inp.ended and inp.available == 0
    assert not inp.read(50).any()  # silence after the end
    inp.stop()


def test_file_input_resamples_loops_and_downmixes(tmp_path):
    data = _noise(4800, 2, seed=9)
    path = tmp_path / "x.wav"
    soundfile.write(path, data, 48000, subtype="FLOAT")
    inp = FileInput(path, 16000, channels=1, loop=True)
    assert len(inp.audio) == 1600
    whole = inp.read(3200)[0]
    np.testing.assert_array_equal(whole[:1600], whole[1600:])  # looped
    rs = StreamResampler(48000, 16000, 1)
    ref = np.concatenate([rs.process(downmix(data, 1)), rs.flush()])[int(rs.latency_frames) :][:1600, 0]
    np.testing.assert_allclose(whole[:1600], ref, atol=1e-6)
    assert not inp.ended


def test_file_input_realtime_paces_reads(tmp_path):
    path = tmp_path / "x.wav"
    soundfile.write(path, _noise(48000, 1), 48000, subtype="FLOAT")
    inp = FileInput(path, 48000, realtime=True)
    assert inp.available == 0
    inp.start()
    assert inp.read(48000) is None  # a second is not there yet
    t0 = time.monotonic()
    assert inp.read(4800, timeout=2) is not None
    assert time.monotonic() - t0 < 0.5
    time.sleep(0.1)
    latest = inp.read_latest(100)
    assert latest.shape == (1, 100) and inp.available < 100


# --- open_input -----------------------------------------------------------------------------------


@pytest.mark.parametrize("spec", ["", "nope", "alsa:hw:0", "missing.wav", "jackd"])
def test_open_input_rejects_bad_specs(spec):
    with pytest.raises(ValueError) as e:
        open_input(spec, 48000)
    assert "\n" not in str(e.value) and "jack" in str(e.value)


@pytest.mark.jack
def test_open_input_jack_specs(jack_server):
    inp = open_input("jack:", 48000, client_name="lmdm-test-in")
    try:
        assert isinstance(inp, JackInput) and inp.sources == []
    finally:
        inp.stop()
    inp = open_input("jack:system:capture_1,system:capture_2", 24000, client_name="lmdm-test-in")
    try:
        assert inp.sources == ["system:capture_1", "system:capture_2"] and inp.device_channels == 2
        inp.start()
        assert inp.read(2400, timeout=3).shape == (1, 2400)
    finally:
        inp.stop()
