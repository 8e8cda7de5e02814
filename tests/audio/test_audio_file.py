"""FileBackend: fast mode records exactly what was produced; real-time mode keeps wall-clock pace."""

import time

import numpy as np
import pytest
import soundfile
from waiting import wait_for

from lmdm_live.audio import AudioRing, FileBackend, ToneFeeder, open_backend, sine_frames

RATE = 48000


def test_fast_mode_writes_exactly_what_was_produced(tmp_path):
    path = tmp_path / "fast.wav"
    ring = AudioRing(2, 8192)
    total = RATE * 3 + 777  # not a multiple of the block size: the last partial block must be drained
    backend = FileBackend(path, RATE, channels=2, blocksize=1024, subtype="FLOAT")
    backend.start(ring)
    t0 = time.perf_counter()
    pos = 0
    while pos < total:  # the producer runs as fast as the backend drains
        pos += ring.write(sine_frames(pos, min(2000, total - pos), RATE, [440.0, 660.0]))
        time.sleep(0)
    backend.stop()
    elapsed = time.perf_counter() - t0
    assert backend.frames_written == total
    assert elapsed < 3.0 * 0.9, f"3 s of audio took {elapsed:.2f} s: fast mode should not pace itself"
    data, sr = soundfile.read(path, dtype="float32", always_2d=True)
    assert sr == RATE and data.shape == (total, 2)
    assert np.array_equal(data, sine_frames(0, total, RATE, [440.0, 660.0])), "samples changed on the way"
    assert ring.underruns == 0  # fast mode waits for data, it never pads


def test_fast_mode_default_is_pcm16_and_stop_drains_a_partial_block(tmp_path):
    path = tmp_path / "pcm.wav"
    ring = AudioRing(1, 4096)
    ring.write(np.full((1000, 1), 0.5, np.float32))  # less than a block: only stop()'s drain writes it
    with FileBackend(path, RATE, channels=1) as backend:
        backend.start(ring)
    info = soundfile.info(str(path))
    assert info.subtype == "PCM_16" and info.frames == 1000 and info.channels == 1
    data, _ = soundfile.read(path, dtype="float32")
    assert np.allclose(data, 0.5, atol=1 / 32768)


def test_realtime_mode_takes_about_one_second_per_second(tmp_path):
    path = tmp_path / "rt.wav"
    ring = AudioRing(2, RATE // 2)
    feeder = ToneFeeder(ring, RATE, [440.0, 660.0])
    feeder.prime()
    backend = FileBackend(path, RATE, channels=2, blocksize=1024, realtime=True)
    feeder.start()
    t0 = time.perf_counter()
    backend.start(ring)
    try:
        written = wait_for(lambda: backend.frames_written >= RATE, 10.0, poll_s=0.005)  # timed: poll finely
        assert written, "1 s of audio was not written in 10 s"
        elapsed = time.perf_counter() - t0
    finally:
        backend.stop()
        feeder.stop()
    # Pacing by deadlines can only be late, never early: a lower bound that holds on any machine, and a
    # loose upper one for a busy one.
    assert 0.9 <= elapsed <= 2.5, f"1 s of audio took {elapsed:.2f} s in real-time mode"
    assert backend.stats.callbacks >= RATE // 1024
    assert ring.underruns == 0, "the feeder kept ahead, so nothing should have been padded"
    data, _ = soundfile.read(path, dtype="float32", always_2d=True)
    assert len(data) == backend.frames_written
    assert np.sqrt(np.mean(data[:, 0] ** 2)) == pytest.approx(0.5 / np.sqrt(2), rel=0.02)


def test_realtime_mode_pads_silence_when_starved_and_does_not_drift(tmp_path):
    path = tmp_path / "starved.wav"
    ring = AudioRing(1, RATE)
    ring.write(np.full((RATE // 10, 1), 0.25, np.float32))  # 0.1 s of data, then nothing
    backend = FileBackend(path, RATE, channels=1, blocksize=512, realtime=True, subtype="FLOAT")
    t0 = time.perf_counter()
    backend.start(ring)
    time.sleep(0.6)
    backend.stop()
    elapsed = time.perf_counter() - t0
    # a real device keeps playing (silence) when starved; the file grows with the wall clock
    assert backend.frames_written / RATE == pytest.approx(elapsed, abs=0.25)
    assert ring.underruns > 0
    data, _ = soundfile.read(path, dtype="float32")
    assert np.all(data[: RATE // 10] == 0.25)
    assert np.all(data[RATE // 10 + 512 :] == 0.0)


def test_open_backend_file_and_errors(tmp_path):
    backend = open_backend("file", path=tmp_path / "x.wav", sample_rate=RATE, channels=2)
    assert isinstance(backend, FileBackend) and backend.output_latency_s == 0.0
    with pytest.raises(ValueError):
        backend.start(AudioRing(1, 16))  # channel mismatch
    backend.stop()
    with pytest.raises(ValueError):
        FileBackend(tmp_path / "y.wav", RATE, subtype="MP3")
    with pytest.raises(ValueError, match="unknown audio backend"):
        open_backend("alsa")


KILLED = """
import sys, time
from lmdm_live import Instrument
from lmdm_live.audio import FileBackend
from lmdm_live.model.bundle import LMDMModel
from lmdm_live.model.lmdm import LMDMConfig
model = LMDMModel.preset("tiny", lmdm=LMDMConfig(mode="causal", context_frames=16, block_frames=8), seed=0)
out, take = sys.argv[1], sys.argv[2]
inst = Instrument(model, backend=FileBackend(out, model.sample_rate, realtime=True), steps=1, quiet=True)
inst.record(take)
print("ready", flush=True)
time.sleep(600)
"""


def riff_frames(path, frame_bytes: int) -> int:
    """Frames a WAV's header says it holds, after checking that its sizes are the file's: the RIFF size is the
    file less 8 bytes and the data chunk ends at the end of the file (what strict readers insist on)."""
    import struct

    data = path.read_bytes()
    assert data[:4] == b"RIFF" and data[8:12] == b"WAVE"
    (riff,) = struct.unpack_from("<I", data, 4)
    i = 12
    while i + 8 <= len(data):
        chunk, size = data[i : i + 4], struct.unpack_from("<I", data, i + 4)[0]
        if chunk == b"data":
            # what was written after the last rewrite (at most about a second) lies past the data chunk
            assert riff == i + size and len(data) - (i + 8 + size) <= 2 * RATE * frame_bytes, (riff, size)
            return size // frame_bytes
        i += 8 + size + (size & 1)
    raise AssertionError(f"no data chunk in {path.name} (RIFF size {riff})")


def test_a_killed_recording_leaves_a_wav_every_reader_opens(tmp_path):
    """SIGKILL while the file backend and inst.record write: both headers say (nearly) all that is there."""
    import signal
    import subprocess
    import sys
    import wave

    out, take = tmp_path / "out.wav", tmp_path / "take.wav"
    p = subprocess.Popen(
        [sys.executable, "-c", KILLED, str(out), str(take)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert p.stdout.readline().strip() == "ready"
        time.sleep(3.5)
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait(30)
    with wave.open(str(out)) as w:  # the standard library's reader, strict about the header
        assert w.getnchannels() == 2 and w.getnframes() >= 2 * w.getframerate()
        heard = w.getnframes()
    assert riff_frames(out, 2 * 2) == heard
    took = riff_frames(take, 2 * 4)  # float: Python's wave reads no float WAVs, so the chunks are checked
    assert took >= 1.5 * soundfile.info(str(take)).samplerate and len(soundfile.read(str(take))[0]) >= took
