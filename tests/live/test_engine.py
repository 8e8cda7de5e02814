"""The engine: changes at block boundaries, faults that never stop the sound, and bit-exact replay.

Here the test itself is the ring's consumer (the audio callback's side); tests/live/test_play_jack.py does the
same through a real JACK server.
"""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import torch

from lmdm_live.dsp.limiter import LimiterConfig
from lmdm_live.live.engine import Engine
from lmdm_live.live.output import OutputChain
from lmdm_live.live.replay import read_log, replay
from lmdm_live.live.stream import LMDMStream, StreamParams
from lmdm_live.model.bundle import LMDMModel
from lmdm_live.model.lmdm import LMDMConfig
from lmdm_live.model.samplers import SamplerSettings

WINDOW = LMDMConfig(mode="causal", context_frames=8, block_frames=4)


@pytest.fixture(scope="module")
def model():
    return LMDMModel.preset("tiny", lmdm=WINDOW, seed=0)


def make_engine(model, text, tmp_path, **kw):
    stream = LMDMStream(
        model, text, seed=3, params=StreamParams.of("techno", sampler=SamplerSettings(steps=2))
    )
    kw.setdefault("headroom_ms", 100)
    return Engine(
        stream,
        None,
        out_rate=48000,
        out_channels=2,
        log_path=tmp_path / "ev.jsonl",
        model_ref="tiny",
        **kw,
    )


def consume(engine: Engine, blocks: int, actions: dict | None = None, chunk: int = 256) -> np.ndarray:
    """Read the ring like an audio callback until `blocks` blocks were generated; run actions[block] once."""
    out, buf = (
        [np.zeros((0, engine.out_channels), np.float32)],
        np.zeros((chunk, engine.out_channels), np.float32),
    )
    actions = dict(actions or {})
    deadline = time.monotonic() + 120
    while engine.stats.blocks < blocks:
        for b in [b for b in actions if engine.stats.blocks >= b]:
            actions.pop(b)(engine)
        n = engine.ring.read_into(buf)
        out.append(buf[:n].copy())
        if n < chunk:
            time.sleep(0.002)
        assert time.monotonic() < deadline, "engine stalled"
    return np.concatenate(out)


def drain(engine: Engine) -> np.ndarray:
    buf = np.zeros((engine.ring.fill, engine.out_channels), np.float32)
    engine.ring.read_into(buf)
    return buf


def test_live_equals_replay_with_changes_and_faults(model, text, tmp_path):
    engine = make_engine(model, text, tmp_path)
    w = model.dit.transformer.project_out.weight
    saved = w.detach().clone()

    def faults(block):
        if block == 5:
            raise RuntimeError("injected failure")
        with torch.no_grad():  # block 8: the model itself returns NaN
            w.copy_(saved)
            if block == 8:
                w[0, 0] = float("nan")

    engine.fault_injector = faults
    actions = {
        2: lambda e: e.submit(
            "params",
            StreamParams.of({"ambient": 1.0, "techno": 0.3}, sampler=SamplerSettings(steps=2, cfg=2.0)),
        ),
        4: lambda e: e.submit("gain", 0.5),
        7: lambda e: e.submit("seed", 11),
        10: lambda e: e.submit("drop", 4),
        11: lambda e: e.submit("reset"),
    }
    engine.start()
    live = consume(engine, 14, actions)
    engine.stop()
    live = np.concatenate([live, drain(engine)])
    with torch.no_grad():
        w.copy_(saved)

    assert engine.stats.faults == 2
    assert "injected failure" in engine.errors[0] and "NaN" in engine.errors[1]
    assert np.isfinite(live).all() and np.abs(live).max() > 0
    events = read_log(tmp_path / "ev.jsonl")
    kinds = [e["type"] for e in events]
    for k in ("start", "params", "gain", "seed", "drop", "reset", "fault", "stop"):
        assert k in kinds, k
    again, rate = replay(tmp_path / "ev.jsonl", model=model, text=text)
    assert rate == 48000 and again.shape == live.shape
    assert np.array_equal(again, live)  # sample for sample


def test_the_limiter_holds_its_ceiling_live_and_replay_reproduces_it(model, text, tmp_path):
    (tmp_path / "off").mkdir()
    loud = make_engine(model, text, tmp_path / "off", limiter=None)
    loud.start()
    raw = consume(loud, 6)
    loud.stop()
    raw = np.concatenate([raw, drain(loud)])
    engine = make_engine(model, text, tmp_path, limiter=LimiterConfig(ceiling=0.05))
    engine.start()
    live = consume(engine, 6)
    engine.stop()
    live = np.concatenate([live, drain(engine)])
    assert np.abs(raw).max() > 0.2  # this model's output goes well past that ceiling...
    assert (
        np.abs(live).max() < 0.05 * 1.05
    )  # ...and the limiter holds it (the resampler may overshoot a hair)
    assert engine.status()["limiter_db_last"] > 0 and loud.status()["limiter_db_last"] is None
    head = read_log(tmp_path / "ev.jsonl")[0]
    assert head["limiter"]["ceiling"] == 0.05
    again, _ = replay(tmp_path / "ev.jsonl", model=model, text=text)
    assert np.array_equal(again, live)


def test_faulty_block_fades_instead_of_clicking(model, text, tmp_path):
    engine = make_engine(model, text, tmp_path)
    engine.fault_injector = lambda b: (_ for _ in ()).throw(RuntimeError("boom")) if b == 4 else None
    engine.start()
    # the restarted decoder's latency leaves blocks 5 and 6 empty: the music is back from block 7 on
    audio = consume(engine, 9)
    engine.stop()
    audio = np.concatenate([audio, drain(engine)])
    x = audio[:, 0]
    silent = np.flatnonzero(np.abs(x) < 1e-6)
    runs = np.split(silent, np.flatnonzero(np.diff(silent) > 1) + 1)
    gap = max(runs, key=len)  # the failed block: silence...
    assert len(gap) > 0.5 * WINDOW.block_frames * model.hop * 48000 / 44100
    fade = int(engine.chain.fade * 48000 / 44100)
    peak = np.abs(x).max()
    before = np.abs(x[gap[0] - fade : gap[0]])  # ...entered by a fade-out...
    after = np.abs(x[gap[-1] + 1 : gap[-1] + 1 + fade])  # ...and left by a fade-in
    ramp = np.linspace(1.0, 0.0, fade)
    assert (before <= ramp * peak + 0.1 * peak).all()
    assert (after <= ramp[::-1] * peak + 0.1 * peak).all()
    assert np.abs(x[gap[-1] + 1 + fade :]).max() > 0.1 * peak  # and the music comes back
    assert engine.stats.faults == 1 and engine.status()["faults"] == 1


def test_changes_wait_for_their_beat(model, text, tmp_path):
    engine = make_engine(model, text, tmp_path, bpm=200.0)  # a beat every 0.3 s, a bar every 1.2 s
    engine.start()
    consume(engine, 3)
    bar = engine.submit("gain", 0.25, at="bar")
    consume(engine, engine.stats.blocks + int(1.5 / model.block_seconds) + 2)
    engine.stop()
    gain_events = [e for e in read_log(tmp_path / "ev.jsonl") if e["type"] == "gain"]
    assert len(gain_events) == 1
    start_s = gain_events[0]["block"] * model.block_seconds
    assert start_s >= bar.target_s - 1e-9
    assert start_s - bar.target_s < model.block_seconds  # the first block boundary at or after the bar
    assert bar.target_s / 1.2 == pytest.approx(round(bar.target_s / 1.2), abs=1e-6) and bar.target_s > 0


def test_output_chain_resamples_and_maps_channels():
    chain = OutputChain(44100, 48000, 2)
    t = np.arange(44100) / 44100
    mono = np.sin(2 * np.pi * 440 * t).astype(np.float32)[None, :]
    out = np.concatenate([chain.push(mono[:, i : i + 4410]) for i in range(0, 44100, 4410)])
    assert out.shape[1] == 2 and np.array_equal(out[:, 0], out[:, 1])
    assert abs(out.shape[0] - 48000 * (44100 - chain.fade) / 44100) < 200
    spectrum = np.abs(np.fft.rfft(out[4800:, 0]))
    peak_hz = np.argmax(spectrum) * 48000 / (out.shape[0] - 4800)
    assert abs(peak_hz - 440) < 2


def test_log_is_valid_json_lines(model, text, tmp_path):
    engine = make_engine(model, text, tmp_path)
    engine.start()
    consume(engine, 3)
    engine.stop()
    lines = (tmp_path / "ev.jsonl").read_text().splitlines()
    head = json.loads(lines[0])
    assert head["type"] == "start" and head["model"] == "tiny" and head["window"]["block_frames"] == 4
    bad = tmp_path / "bad.jsonl"
    bad.write_text("{not json\n")
    with pytest.raises(ValueError, match="not a JSON event"):
        read_log(bad)


def test_a_failing_change_does_not_stop_the_engine(model, text, tmp_path):
    engine = make_engine(model, text, tmp_path)
    engine.start()
    consume(engine, 2)
    engine.submit("drop", "not a number")  # the Instrument validates; the engine must survive anyway
    blocks = engine.stats.blocks
    audio = consume(engine, blocks + 3)
    engine.stop()
    assert any(e.startswith("engine: ValueError") for e in engine.errors)
    assert engine.stats.blocks >= blocks + 3 and np.abs(audio).max() > 0


def test_slow_blocks_show_as_time_behind_and_explain_the_underruns(model, text, tmp_path):
    """Blocks made slower than they play (the machine too busy) drain the ring: the underruns that follow come
    with `behind_ms_max` past the headroom, which is how the real-time tests tell load from lost audio."""
    from lmdm_live.audio.file_backend import FileBackend

    backend = FileBackend(tmp_path / "out.wav", 48000, blocksize=256, realtime=True)
    stream = LMDMStream(
        model, text, seed=3, params=StreamParams.of("techno", sampler=SamplerSettings(steps=2))
    )
    engine = Engine(stream, backend, headroom_ms=100)
    block_s = model.block_seconds
    slow = range(6, 12)
    engine.fault_injector = lambda block: time.sleep(2 * block_s) if block in slow else None
    engine.start()
    try:
        deadline = time.monotonic() + 120
        while engine.stats.blocks < slow.stop + 4:
            assert time.monotonic() < deadline, "engine stalled"
            time.sleep(0.01)
        st = engine.status()
    finally:
        engine.stop()
    # each slow block loses at least one block of real time, and nothing fast comes between them
    assert st["behind_ms_max"] >= 0.9 * len(slow) * block_s * 1e3 > st["headroom_ms"]
    assert st["underruns"] > 0 and st["faults"] == 0


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) / 1024


def test_the_engine_hands_freed_heap_back_while_it_plays(model, text, tmp_path):
    """A long set frees far more than it keeps (a conditioning per new prompt, block activations), in
    pieces between ones that stay: glibc keeps that free heap resident, and memory creeps up. The engine
    hands it back to the system while it waits for the ring (scripts/soak.py shows it flat over 10 min)."""
    eng = make_engine(model, text, tmp_path)
    eng.trim_every_s = 0.5
    eng.start()
    try:
        while eng.stats.blocks < 4:  # its own memory in place first
            time.sleep(0.05)
        pieces = [
            np.ones(16 * 1024, np.float32) for _ in range(2400)
        ]  # 150 MiB of 64 KiB heap blocks, touched
        kept = pieces[::16]  # pinned between the freed ones, so the free heap cannot shrink from its top
        del pieces
        before = rss_mb()
        deadline = time.monotonic() + 20
        while rss_mb() > before - 100 and time.monotonic() < deadline:
            time.sleep(0.1)
        after = rss_mb()
    finally:
        eng.stop()
    assert after < before - 100, f"resident memory {before:.0f} -> {after:.0f} MB: the freed heap stayed"
    assert len(kept) == 150


@pytest.mark.parametrize("ceiling", [0.98, 0.05], ids=["limiter", "limiting"])
def test_a_change_remakes_the_queued_blocks_not_yet_heard_and_replays_exactly(model, text, tmp_path, ceiling):
    """Six blocks queued, the first three heard: a prompt change is applied from the first block that can
    still be made in time, not after the queue; what is played (old blocks, then new ones) replays exactly.
    (The decoder's latency and the fade tail make the first two blocks' output empty.) At a low ceiling the
    limiter works throughout, so its gain must be put back with the rest of the output chain."""
    lim = LimiterConfig(ceiling=ceiling)
    engine = make_engine(model, text, tmp_path, limiter=lim)
    engine.rewind_guard_frames = 256
    engine._open_log()
    for _ in range(6):
        engine._generate_one()
    starts = [q.start for q in engine._queued]
    engine.stats.block_ms.clear()
    engine.stats.block_ms.append(1.0)  # the time a block takes decides how close a remade one may start
    heard = np.zeros((starts[3], engine.out_channels), np.float32)  # block 3 is about to play
    assert engine.ring.read_into(heard) == starts[3] > 0
    engine.regenerate = False
    engine.submit("params", StreamParams.of("ambient pads", sampler=SamplerSettings(steps=2)))
    assert not engine._rewind()  # off: the change waits behind the queue
    engine.regenerate = True
    written = engine.ring.frames_written
    assert engine._rewind() == written - starts[4]  # what the engine counts as audio to make again
    assert engine.stream.block_index == 4 and engine.ring.frames_written == starts[4]
    assert [q.block for q in engine._queued] == [0, 1, 2, 3]
    for _ in range(3):
        engine._generate_one()
    assert engine.stats.rewinds == 1 and engine.stream.params.dominant == "ambient pads"
    live = np.concatenate([heard, drain(engine)])
    engine.stop()
    events = read_log(tmp_path / "ev.jsonl", heard=False)
    assert [(e["type"], e["block"]) for e in events if e["type"] in ("params", "rewind")] == [
        ("rewind", 4),
        ("params", 4),
    ]
    assert "rewind" not in [e["type"] for e in read_log(tmp_path / "ev.jsonl")]  # as heard
    again, _ = replay(tmp_path / "ev.jsonl", model=model, text=text)
    assert again.shape == live.shape and np.array_equal(again, live)
    # the change is heard from block 4: up to there the same audio as a stream left alone, then not
    alone = make_engine(model, text, tmp_path / "alone", limiter=lim)
    for _ in range(7):
        alone._generate_one()
    old = drain(alone)
    assert np.array_equal(old[: starts[4]], live[: starts[4]])
    assert not np.allclose(old[starts[4] :], live[starts[4] :])


def test_a_flood_of_changes_remakes_again_only_once_the_ring_has_refilled(model, text, tmp_path):
    """A rewind leaves the ring at half its headroom. Remaking again at once, under a flood of changes, kept it
    there with the engine doing nothing but remake, and a machine at twice real time ran dry (the OSC flood
    and fuzz tests underran so). Until the ring holds its headroom again a change waits behind the queue."""
    engine = make_engine(model, text, tmp_path, headroom_ms=600.0)
    engine.rewind_guard_frames = 256
    engine._open_log()
    while engine.ring.fill < engine.headroom_frames + 2 * engine.block_out_frames:
        engine._generate_one()
    engine.stats.block_ms.clear()
    engine.stats.block_ms.extend([1.0] * 8)  # the time a block takes decides how close a remade one may start
    engine.submit("seed", 11)
    assert engine._rewind() > 0 and engine.stats.rewinds == 1  # a full ring: remade at once
    engine._generate_one()  # the block after the kept queue, with the change: past where a rewind may start
    engine.stats.block_ms.extend([1.0] * 8)  # (as fast as before)
    assert engine.ring.fill < engine.headroom_frames
    engine._last_rewind = 0.0  # a block's time later, as far as the once-a-block rule knows
    engine.submit("seed", 12)
    assert engine._rewind() == 0  # half a ring: the change waits
    queued = [q.block for q in engine._queued]
    while engine.ring.fill < engine.headroom_frames:
        engine._generate_one()  # refilling, with the changes applied at the end of the queue
    assert engine.stats.rewinds == 1 and engine.stream.seed == 12
    events = read_log(tmp_path / "ev.jsonl", heard=False)
    assert [e["block"] for e in events if e["type"] == "seed" and e["value"] == 12] == [queued[-1] + 1]


def test_a_reset_starts_the_music_over_without_a_gap(model, text, tmp_path):
    """A player's reset forgets the context but not the decoder's carried audio: each block after it still
    writes a block of sound (restarting the decoder too, as after a fault, wrote nothing for a block, which
    a flood of resets turned into underruns), and what plays after it is not what was playing."""
    engine = make_engine(model, text, tmp_path)
    alone = make_engine(model, text, tmp_path / "alone")
    engine._open_log()
    written = [engine._generate_one() for _ in range(4)]
    for _ in range(7):
        alone._generate_one()
    assert written[:2] == [0, 0] and min(written[2:]) > 0  # the decoder's latency, then whole blocks
    engine.submit("reset")
    after = [engine._generate_one() for _ in range(3)]
    assert all(abs(n - written[-1]) <= 1 for n in after), (written, after)
    assert engine.stream.block_index == 7
    live, old = drain(engine), drain(alone)
    assert live.shape == old.shape
    cut = sum(written[2:])  # the audio of blocks 2-3, made before the reset
    assert np.array_equal(live[:cut], old[:cut])
    assert not np.allclose(live[cut + written[-1] :], old[cut + written[-1] :])


def test_ring_retract_keeps_clear_of_the_reader():
    from lmdm_live.audio.ring import AudioRing

    ring = AudioRing(1, 1000)
    ring.write(np.ones((600, 1), np.float32))
    out = np.zeros((100, 1), np.float32)
    ring.read_into(out)
    assert not ring.retract(150, guard=100)  # within reach of the reader
    assert ring.retract(300, guard=100) and ring.fill == 200
    with pytest.raises(ValueError):
        ring.retract(700, guard=0)


def test_low_latency_cuts_a_change_into_the_block_playing_and_replays_exactly(model, text, tmp_path):
    """With `splice`, a change does not wait for a block boundary: the block playing is made again from
    its boundary with the change and cut in a guard ahead of the read position, with a short crossfade."""
    engine = make_engine(model, text, tmp_path)
    engine.splice, engine.rewind_guard_frames = True, 256
    engine._open_log()
    for _ in range(6):
        engine._generate_one()
    starts = [q.start for q in engine._queued]
    engine.stats.block_ms.clear()
    engine.stats.block_ms.append(1.0)
    read = starts[3] + 1000  # block 3 is playing
    heard = np.zeros((read, engine.out_channels), np.float32)
    assert engine.ring.read_into(heard) == read
    engine.submit("gain", 0.25)
    assert engine._rewind()
    # guard + the time to make the block + half the headroom, kept as margin
    cut = read + 256 + int(1.25 * 1.0 / 1e3 * engine.out_rate) + engine.headroom_frames // 2
    assert engine.stream.block_index == 3 and engine.ring.frames_written == cut
    for _ in range(3):
        engine._generate_one()
    live = np.concatenate([heard, drain(engine)])
    engine.stop()
    events = read_log(tmp_path / "ev.jsonl")
    assert [(e["type"], e["block"]) for e in events if e["type"] in ("gain", "splice")] == [
        ("splice", 3),
        ("gain", 3),
    ]
    again, _ = replay(tmp_path / "ev.jsonl", model=model, text=text)
    assert again.shape == live.shape and np.array_equal(again, live)
    alone = make_engine(model, text, tmp_path / "alone")
    for _ in range(7):
        alone._generate_one()
    old = drain(alone)
    assert np.array_equal(old[:cut], live[:cut])  # untouched up to the cut
    after = slice(cut + engine.splice_fade, starts[4])  # then the rest of block 3 at a quarter
    assert np.allclose(live[after], 0.25 * old[after], atol=1e-6)
