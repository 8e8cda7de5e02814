"""Live input: a sketch from a hum, jamming and the generative delay, through the private JACK server.

The model is the random tiny preset with tempo, sketch and accompaniment channels: it makes noise, so these
tests check plumbing and timing, not music (tests/live/test_sketch_default_model.py checks the music).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from realtime import check_underruns

from lmdm_live import Instrument
from lmdm_live.audio import FileBackend, JackBackend
from lmdm_live.audio.file_backend import FileInput
from lmdm_live.live.engine import Engine
from lmdm_live.live.inputs import SKETCH_LEAD_DB, DelaySettings, Feed, LiveInput, SketchSettings
from lmdm_live.live.stream import LMDMStream, StreamParams
from lmdm_live.model.bundle import LMDMModel
from lmdm_live.model.conditioners import MiniLMTextEncoder
from lmdm_live.model.lmdm import LMDMConfig
from lmdm_live.model.oobleck import OobleckConfig, OobleckVAE
from lmdm_live.model.samplers import SamplerSettings

WINDOW = LMDMConfig(mode="causal", context_frames=16, block_frames=8)  # 186 ms blocks at 44.1 kHz
EXTRAS = {"tempo": True, "sketch": True, "accomp": True}
HERE = Path(__file__).parent


@pytest.fixture(scope="module")
def model():
    """The tiny preset with an autoencoder a quarter as wide: live input runs its encoder over each block and
    margin, which the preset's random 44.1 kHz one does slower than real time on two cores."""
    m = LMDMModel.preset("tiny", lmdm=WINDOW, seed=0, extras=EXTRAS)
    torch.manual_seed(0)
    m.vae = OobleckVAE(OobleckConfig.small(audio_channels=1, channels=8)).eval().requires_grad_(False)
    return m


def hum(sr: int, seconds: float) -> tuple[np.ndarray, np.ndarray]:
    """A hummed-like tone: a glide over five semitones with 5 Hz vibrato, three harmonics. Returns the
    audio and its pitch (MIDI) per sample."""
    t = np.arange(int(seconds * sr)) / sr
    midi = 57.0 + 5.0 * np.minimum(t / (seconds / 2), 1.0) + 0.3 * np.sin(2 * np.pi * 5 * t)
    phase = 2 * np.pi * np.cumsum(440.0 * 2 ** ((midi - 69) / 12)) / sr
    x = 0.3 * np.sin(phase) + 0.1 * np.sin(2 * phase) + 0.05 * np.sin(3 * phase)
    return x.astype(np.float32), midi


def clicks(rate: int, seconds: float, seed: int = 0) -> np.ndarray:
    """Drum-like hits at irregular times (so a cross-correlation has one clear peak)."""
    rng = np.random.default_rng(seed)
    x = np.zeros(int(seconds * rate), np.float32)
    k = np.arange(int(0.04 * rate))
    hit = (0.8 * np.exp(-k / (0.006 * rate)) * np.sin(2 * np.pi * 150 * k / rate)).astype(np.float32)
    t = 0.15
    while t < seconds - 0.1:
        i = int(t * rate)
        x[i : i + len(hit)] += hit[: len(x) - i]
        t += rng.uniform(0.12, 0.45)
    return x


def envelope(x: np.ndarray, w: int) -> np.ndarray:
    x = x[: len(x) // w * w].reshape(-1, w)
    return np.sqrt((x.astype(np.float64) ** 2).mean(axis=1))


def best_lag(ref: np.ndarray, out: np.ndarray) -> int:
    """The shift (in envelope frames) at which `out` best matches `ref` delayed."""
    a, b = ref - ref.mean(), out - out.mean()
    c = np.correlate(b, a, "full")
    return int(np.argmax(c)) - (len(a) - 1)


def test_sketch_channels_follow_a_hum(model, tmp_path):
    sr, hop = model.sample_rate, model.hop
    x, midi = hum(sr, 5.0)
    sf.write(tmp_path / "hum.wav", x, sr)
    stream = LMDMStream(
        model, MiniLMTextEncoder(), params=StreamParams.of("hum", sampler=SamplerSettings(steps=1))
    )
    engine = Engine(stream, None, out_rate=sr, out_channels=1)
    live = engine.live = LiveInput(engine, on_error=pytest.fail)
    # a file that is not real time is a score: its sample 0 stands at the block the sketch starts at
    live.set("sketch", Feed(FileInput(tmp_path / "hum.wav", sr), "hum", hop), SketchSettings(median=5))
    got = []
    for _ in range(int(4.5 * sr / (WINDOW.block_frames * hop))):
        kw = live.block_inputs(stream.block_index)
        got.append(kw["sketch"])
        assert np.isfinite(stream.next_block(**kw)).all()
    ch = torch.cat(got, dim=1).numpy()
    assert (ch[0] == 1).all()  # the sketch is on
    voiced = ch[2] > 0.5
    pitch = 60 + 12 * ch[1]
    truth = midi[np.arange(ch.shape[1]) * hop + hop // 2]
    assert voiced[5:].mean() > 0.9
    r = np.corrcoef(pitch[voiced], truth[voiced])[0, 1]
    err = np.median(np.abs(pitch[voiced] - truth[voiced]))
    print(f"sketch pitch vs hum: r = {r:.3f}, median error {err:.2f} semitones")
    assert r > 0.95 and err < 0.5
    assert live.latency()["sketch_delay_ms"] == 0.0
    # timbre "prompt" (the default): voiced frames carry a rendered lead's level and brightness, not the hum's
    v = voiced[5:]
    assert np.allclose(ch[3, 5:][v], (SKETCH_LEAD_DB + 40) / 20) and np.allclose(ch[4], np.log2(1.8))

    # timbre "input": the hum's own, a near-sine whose centroid sits near its pitch (200-300 Hz)
    live.set("sketch", live.plan.sketch[0], SketchSettings(median=5, timbre="input"))
    own = live.block_inputs(stream.block_index)["sketch"]
    assert (own[4] < np.log2(0.5)).all() and not np.allclose(own[3], (SKETCH_LEAD_DB + 40) / 20)
    with pytest.raises(ValueError, match="timbre must be one of prompt, input"):
        SketchSettings(timbre="voice")

    # strength blends toward 'off' (zeros), notes replace the pitch
    live.set("sketch", live.plan.sketch[0], SketchSettings(strength=0.5, median=5))
    half = live.block_inputs(stream.block_index)["sketch"]
    assert torch.allclose(half[0], torch.full_like(half[0], 0.5))
    from lmdm_live.live.inputs import NoteSketch

    live.set_notes(NoteSketch(True, 64, 100))
    noted = live.block_inputs(stream.block_index)["sketch"]
    assert torch.allclose(noted[1], torch.full_like(noted[1], 0.5 * 4 / 12))


def test_bad_live_input_is_one_line_and_sound_goes_on(model, tmp_path, jack_server):
    backend = FileBackend(tmp_path / "out.wav", model.sample_rate, channels=1, realtime=False)
    inst = Instrument(model, backend=backend, steps=1, headroom_ms=85, quiet=True)
    try:
        for bad in (
            lambda: inst.sketch("no-such-input"),
            lambda: inst.jam("jack:no-such-client:out_9"),
            lambda: inst.jam(42),
            lambda: inst.jam("jack:", t_f=WINDOW.block_frames + 1),
            lambda: inst.sketch("jack:", filter=4),
            lambda: inst.sketch("jack:", strength=3),
            lambda: inst.delay("jack:", blocks=0),
            lambda: inst.sketch_note(60, 100),  # notes are off
        ):
            with pytest.raises(ValueError) as e:
                bad()
            assert "\n" not in str(e.value)
        inst.wait_blocks(3)
        assert inst.engine.stats.faults == 0 and not inst.engine.errors
    finally:
        inst.stop()
    plain = LMDMModel.preset("tiny", lmdm=WINDOW, seed=0)
    inst = Instrument(plain, backend=FileBackend(tmp_path / "o2.wav", plain.sample_rate, 1), quiet=True)
    try:
        with pytest.raises(ValueError, match="no sketch channels"):
            inst.sketch("jack:")
    finally:
        inst.stop()


class Player:
    """tests/support/jack_play.py in its own process: plays a signal out of `name:out_1` on `go()`."""

    def __init__(self, tmp_path: Path, name: str, signal: np.ndarray) -> None:
        self.path = tmp_path / f"{name}.npy"
        np.save(self.path, signal[:, None].astype(np.float32))
        self.proc = subprocess.Popen(
            [sys.executable, str(HERE.parent / "support" / "jack_play.py"), name, str(self.path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout.readline().strip() == "ready"

    def go(self) -> None:
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()

    def report(self) -> dict:
        assert self.proc.wait(timeout=30) == 0, "the player did not finish its signal"
        return json.loads(Path(str(self.path) + ".json").read_text())

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


class Recorder:
    """tests/support/jack_record.py in its own process, recording `sources` until stopped."""

    def __init__(self, tmp_path: Path, name: str, sources: list[str], seconds: float) -> None:
        self.out = tmp_path / f"{name}.npy"
        self.proc = subprocess.Popen(
            [
                sys.executable,
                str(HERE.parent / "support" / "jack_record.py"),
                name,
                str(self.out),
                str(seconds),
                *sources,
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout.readline().strip() == "ready"

    def result(self) -> tuple[np.ndarray, dict]:
        self.proc.terminate()
        self.proc.wait(timeout=30)
        return np.load(self.out), json.loads(Path(str(self.out) + ".json").read_text())


def test_jam_through_jack(model, tmp_path, jack_server):
    rate = 48000
    player = Player(tmp_path, "lmdm-jam-player", clicks(rate, 4.0))
    backend = JackBackend(client_name="lmdm-jam-out", channels=1, connect=False)
    inst = Instrument(model, backend=backend, steps=1, headroom_ms="safe", prompt="band", quiet=True)
    recorder = None
    try:
        inst.jam("jack:lmdm-jam-player:out_1", t_f=2, mix=0.5)
        recorder = Recorder(tmp_path, "lmdm-jam-rec", ["lmdm-jam-out:out_1"], 30)
        inst.wait_blocks(3)
        player.go()
        player.report()
        time.sleep(1.0)
        rec, _ = recorder.result()
        recorder = None
        st, lat = inst.status(), inst.latency()
        trace = [t for t in inst.engine.live.trace if t["mode"] == "jam"]
    finally:
        if recorder is not None:
            recorder.proc.kill()
        player.close()
        inst.stop()
    audio = rec[:, 0]
    print(f"jam: {len(audio) / rate:.1f} s recorded, rms {np.sqrt(np.mean(audio**2)):.3f}, {lat}")
    assert len(audio) > 4 * rate and np.isfinite(audio).all() and np.abs(audio).max() > 1e-3
    assert st["faults"] == 0, st
    check_underruns(st)
    assert not inst.engine.errors, list(inst.engine.errors)
    assert max(t["valid"] for t in trace) > WINDOW.context_frames  # the clicks reached the model
    assert "jam_delay_ms" in lat and "jam_mix_delay_ms" in lat


class EchoStream(LMDMStream):
    """A stand-in model whose output is exactly the audio its context's newest block was encoded from
    (with the real decoder's latency), so the output follows the context and the delay can be measured.
    The real generation still runs, so the engine's timing is the real one."""

    def next_block(self, extras=None, *, sketch=None, accomp=None) -> np.ndarray:
        live = getattr(self, "live", None)
        if live is None or live.plan.delay is None or not live.trace:  # before the delay is on
            return super().next_block(extras, sketch=sketch, accomp=accomp)
        self.next_latents(extras, sketch=sketch, accomp=accomp)
        b = self.block_index - 1
        feed = live.plan.delay[0]
        j1 = live.trace[-1]["frames"][1]  # the input frame the context ended at
        n_total, lat = live.N, self.latency_samples
        end = (b + 1) * n_total - lat
        n = n_total if b > 0 else n_total - lat
        # stream frame bT + i plays input frame j1 - T + i
        k0 = end - n - b * n_total + (j1 - live.T) * live.hop
        return feed.samples(k0, k0 + n)[None, :]


def test_the_lead_holds_while_a_live_input_plays(model, tmp_path):
    """A live input's delay is tied to the ring's fill when it starts. Blocks that then slow down (a busy
    machine) grew the engine's lead, the ring held more, and the delay grew with it: once 1,569 ms measured
    against 945 reported. While an input plays the lead holds; without one it follows the blocks."""
    sr = model.sample_rate
    sf.write(tmp_path / "in.wav", np.zeros(sr, np.float32), sr)
    stream = LMDMStream(model, MiniLMTextEncoder(), params=StreamParams.of("dub"))
    engine = Engine(stream, None, headroom_ms=170.0, out_rate=48000, out_channels=1)
    engine.stats.block_ms.extend([50.0] * 8)
    before = engine.lead_frames()
    assert before == engine.headroom_frames + int(1.25 * 0.050 * 48000)
    live = engine.live = LiveInput(engine, on_error=pytest.fail)
    live.set("delay", Feed(FileInput(tmp_path / "in.wav", sr), "in", model.hop), DelaySettings(5))
    engine.stats.block_ms.extend([400.0] * 8)  # the machine slows down
    assert engine.lead_frames() == before  # held: the delay stays as it was set
    live.set("delay", None)
    assert engine.lead_frames() == engine.headroom_frames + int(1.25 * 0.400 * 48000)  # follows again


def test_generative_delay_through_jack(model, tmp_path, jack_server):
    rate, blocks = 48000, 5
    sig = clicks(rate, 5.0, seed=1)
    player = Player(tmp_path, "lmdm-delay-player", sig)
    backend = JackBackend(client_name="lmdm-delay-out", channels=1, connect=False)
    inst = Instrument(model, backend=backend, steps=1, headroom_ms="normal", quiet=True, start=False)
    inst.stream = inst.engine.stream = EchoStream(
        model, inst.stream.text, params=inst.stream.params, seed=inst.stream.seed
    )
    recorder = None
    try:
        inst.start()
        inst.delay("jack:lmdm-delay-player:out_1", blocks=blocks)
        inst.stream.live = inst.engine.live
        recorder = Recorder(tmp_path, "lmdm-delay-rec", ["lmdm-delay-out:out_1"], 30)
        inst.wait_blocks(2)
        player.go()
        played = player.report()
        time.sleep(blocks * model.block_seconds + 1.0)
        rec, meta = recorder.result()
        recorder = None
        st, lat = inst.status(), inst.latency()
        trace = [t for t in inst.engine.live.trace if t["mode"] == "delay"]
        inp = inst.engine.live.plan.delay[0].input
        lost = {"player": played["xruns"], "recorder": meta["xruns"], "output": backend.xruns}
        lost |= {"input xruns": inp.xruns, "input frames lost": inp.lost_frames}
    finally:
        if recorder is not None:
            recorder.proc.kill()
        player.close()
        inst.stop()
    assert not inst.engine.errors, (st, list(inst.engine.errors))
    check_underruns(st)  # the delay is judged on JACK's clock: silence inserted would move it
    # each block's context ends the same number of frames before the block: a fixed delay
    assert len({t["block"] * WINDOW.block_frames - t["frames"][1] for t in trace}) == 1
    # place both on JACK's clock, 5 ms envelope frames
    w = rate // 200
    start = played["first"] - meta["first_frame_time"]  # where the signal starts in the recording
    assert start > 0
    out = rec[start:, 0]
    lag = best_lag(envelope(sig, w), envelope(out, w))
    echo_s = model.block_seconds  # the stand-in plays the context's newest block, one block later
    measured_ms = (lag * w / rate - echo_s) * 1e3
    reported_ms = lat["generative_delay_ms"]
    # a cycle JACK skipped (an xrun: the graph's, so every client counts it) can move the signal against the
    # clock it is judged on by a period, and so can input frames lost
    xruns = max(v for k, v in lost.items() if k != "input frames lost")
    lost_ms = (xruns * 256 + lost["input frames lost"]) / rate * 1e3
    print(f"generative delay: reported {reported_ms:.1f} ms, measured {measured_ms:.1f} ms; lost {lost}")
    assert abs(measured_ms - reported_ms) < model.block_seconds * 1e3 + lost_ms
    assert abs(reported_ms - blocks * model.block_seconds * 1e3) < model.hop / model.sample_rate * 1e3 + 1
