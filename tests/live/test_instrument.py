"""The Instrument: validated, idempotent setters that reach the stream at block boundaries; the REPL."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
import soundfile as sf
from prompt_toolkit.input import create_pipe_input
from prompt_toolkit.output import DummyOutput

from lmdm_live import Instrument
from lmdm_live.audio import FileBackend
from lmdm_live.control.repl import NamespaceCompleter, run_repl, run_source, toolbar_text
from lmdm_live.live.replay import read_log, replay
from lmdm_live.live.schedule import LATENCY_PRESETS
from lmdm_live.model.bundle import LMDMModel
from lmdm_live.model.lmdm import LMDMConfig

WINDOW = LMDMConfig(mode="encdec", context_frames=8, block_frames=4)


@pytest.fixture(scope="module")
def model():
    return LMDMModel.preset("tiny", lmdm=WINDOW, seed=0)


@pytest.fixture
def inst(model, tmp_path):
    backend = FileBackend(tmp_path / "out.wav", model.sample_rate, channels=2, realtime=False)
    i = Instrument(model, backend=backend, steps=2, headroom_ms=85, log=tmp_path / "ev.jsonl", quiet=True)
    yield i
    i.stop()


def test_setters_validate_and_reach_the_stream(inst):
    inst.prompts({"acid": 1.0, "strings": 0.5})
    inst.cfg(2.5)
    inst.steps(3)
    inst.tempo_guidance(8)
    inst.sketch_guidance(12)
    inst.wait_blocks(3)
    assert inst.stream.params.prompts == (("acid", 1.0), ("strings", 0.5))
    assert inst.stream.params.sampler.cfg == 2.5 and inst.stream.params.sampler.steps == 3
    assert inst.stream.params.sampler.tempo_guidance == 8.0
    assert inst.stream.params.sampler.sketch_guidance == 12.0
    for bad in (
        lambda: inst.cfg(-1),
        lambda: inst.steps(0),
        lambda: inst.steps(2.5),
        lambda: inst.prompts({"x": -1}),
        lambda: inst.gain(9),
        lambda: inst.prompt("x", at="soon"),
        lambda: inst.sampler("heun"),
        lambda: inst.drop_context(10_000),
        lambda: inst.bpm(0),
        lambda: inst.tempo_guidance(-1),
        lambda: inst.tempo_guidance(True),
        lambda: inst.sketch_guidance(51),
    ):
        with pytest.raises(ValueError):
            bad()
    assert inst.cfg() == 2.5 and inst.steps() == 3 and inst.gain() == 1.0  # nothing changed
    assert inst.tempo_guidance() == 8.0 and inst.sketch_guidance() == 12.0
    st = inst.status()
    assert st["tempo_guidance"] == 8.0 and st["sketch_guidance"] == 12.0
    for key in ("prompt", "cfg", "steps", "x_realtime", "ring_ms", "underruns", "faults", "latency_ms_last"):
        assert key in st, key
    lat = inst.latency()
    assert lat["total_ms"] == pytest.approx(lat["buffer_ms"] + lat["block_ms"] + lat["compute_ms"], abs=0.2)


def test_the_output_limiter_is_on_by_default_can_be_set_or_turned_off(model, tmp_path):
    def make(**kw):
        backend = FileBackend(tmp_path / "l.wav", model.sample_rate, channels=2, realtime=False)
        return Instrument(model, backend=backend, steps=1, quiet=True, start=False, **kw)

    on, low, off = make(), make(limiter=0.01), make(limiter=None)
    assert on.engine.chain.limiter.cfg.ceiling == 0.98 and low.engine.chain.limiter.cfg.ceiling == 0.01
    assert off.engine.chain.limiter is None and off.status()["limiter_db_last"] is None
    assert "limiter" not in toolbar_text(on)
    low.start()
    try:
        low.wait_blocks(3)
        assert low.status()["limiter_db_last"] > 0 and " | limiter -" in toolbar_text(low)
    finally:
        low.stop()
    for bad in (0.0, 1.5):
        with pytest.raises(ValueError, match="limiter ceiling"):
            make(limiter=bad)


def test_same_value_is_a_no_op(inst, tmp_path):
    inst.prompt("dub")
    inst.prompt("dub")
    inst.cfg(1.0)  # already 1
    inst.gain(1.0)
    inst.seed(0)
    inst.wait_blocks(2)
    inst.stop()
    kinds = [e["type"] for e in read_log(tmp_path / "ev.jsonl")]
    assert kinds.count("params") == 1 and "gain" not in kinds and "seed" not in kinds


def test_mute_fades_to_silence_and_unmute_comes_back(inst, tmp_path):
    inst.wait_blocks(2)
    inst.mute()
    inst.wait_blocks(3)
    inst.unmute()
    inst.wait_blocks(3)
    inst.stop()
    audio, _ = sf.read(str(tmp_path / "out.wav"))
    events = read_log(tmp_path / "ev.jsonl")
    assert [e["value"] for e in events if e["type"] == "gain"] == [0.0, 1.0]
    env = np.abs(audio[:, 0])
    assert env.max() > 0.01
    quiet = np.flatnonzero(env < 1e-4)
    assert len(quiet) > 0.5 * WINDOW.block_frames * 1024  # at least half a block of silence while muted


def test_record_writes_what_is_played(inst, tmp_path):
    inst.record(tmp_path / "rec.wav")
    inst.wait_blocks(3)
    inst.stop_recording()
    rec, sr = sf.read(str(tmp_path / "rec.wav"), dtype="float32")
    assert sr == inst.engine.out_rate and rec.shape[1] == 2 and np.abs(rec).max() > 0


def test_file_backend_output_equals_replay(inst, tmp_path):
    inst.prompt("jungle")
    inst.wait_blocks(2)
    inst.gain(0.5)
    inst.wait_blocks(3)
    inst.stop()
    played, _ = sf.read(str(tmp_path / "out.wav"), dtype="float32")
    again, _ = replay(tmp_path / "ev.jsonl", model=inst.model, text=inst.stream.text)
    n = min(len(played), len(again))
    assert n > 0.9 * len(again)
    # the file backend writes 16-bit PCM: equal to the replay within one quantisation step
    assert np.abs(played[:n] - np.clip(again[:n], -1, 1)).max() <= 1.0 / 32767 + 1e-6


def test_repl_runs_code_and_survives_errors(inst):
    ns = {"inst": inst}
    lines = []
    assert run_source("inst.cfg(3)", ns, lines.append)
    assert not run_source("inst.cfg(-3)", ns, lines.append)
    assert not run_source("1/0", ns, lines.append)
    assert not run_source("def broken(:", ns, lines.append)
    assert run_source("inst.cfg()", ns, lines.append)
    assert lines[0].startswith("ValueError: cfg must be") and lines[1].startswith("ZeroDivisionError")
    assert lines[2].startswith("SyntaxError") and lines[3] == "3.0"
    assert "Traceback" in ns["_tb"]
    assert "cfg 3" in toolbar_text(inst)


def test_repl_session_over_a_pipe(inst):
    ns = {"inst": inst}

    async def session():
        with create_pipe_input() as pipe:
            pipe.send_text("inst.steps(4)\ninst.gain(7)\ninst.prompt('broken beat')\n")
            pipe.send_text("quit()\n")
            await asyncio.wait_for(
                run_repl(ns, lambda: toolbar_text(inst), input=pipe, output=DummyOutput()), 30
            )

    asyncio.run(session())
    assert inst.steps() == 4 and inst.prompt() == "broken beat" and inst.gain() == 1.0


def test_completion_of_instrument_methods(inst):
    from prompt_toolkit.document import Document

    c = NamespaceCompleter({"inst": inst})
    names = {x.text for x in c.get_completions(Document("inst.pro"), None)}
    assert names == {"prompt", "prompts"}


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_a_model_loaded_by_path_plays_in_its_dtype_and_replays_from_the_log_alone(model, tmp_path, dtype):
    """The DiT's dtype is logged, so a replay that loads the model by its path plays the same stream."""
    path = tmp_path / "m.lmdm.safetensors"
    model.save(path)
    out = tmp_path / "out.wav"
    backend = FileBackend(out, model.sample_rate, channels=2, realtime=False, subtype="FLOAT")
    inst = Instrument(str(path), backend=backend, steps=2, log=tmp_path / "ev.jsonl", quiet=True, dtype=dtype)
    try:
        assert inst.dtype == dtype
        assert (
            str(next(inst.model.vae.parameters()).dtype) == "torch.float32"
        )  # the autoencoder stays float32
        inst.prompt("jungle")
        inst.wait_blocks(4)
    finally:
        inst.stop()
    assert read_log(tmp_path / "ev.jsonl")[0]["dtype"] == dtype
    played, _ = sf.read(str(out), dtype="float32")
    again, _ = replay(tmp_path / "ev.jsonl")  # loads the model from the logged path and dtype
    n = min(len(played), len(again))
    assert n > 0.9 * len(again) and np.abs(played).max() > 0
    assert np.array_equal(played[:n], again[:n])


def test_dtype_names_resolve_and_a_bad_one_is_one_clear_line():
    import torch

    from lmdm_live.model.precision import INT8, resolve_dtype

    assert resolve_dtype("float32") == torch.float32 and resolve_dtype("bfloat16") == torch.bfloat16
    assert resolve_dtype("int8") == INT8  # "auto": tests/model/test_precision.py
    with pytest.raises(ValueError, match="dtype must be one of auto, float32, bfloat16, int8") as e:
        resolve_dtype("float8")
    assert "\n" not in str(e.value)


def test_threads_are_set_while_playing_and_given_back(model, tmp_path):
    import torch

    from lmdm_live.live.threads import cores, inference_threads

    assert inference_threads() == max(1, cores() - 1) and inference_threads(3) == 3
    with pytest.raises(ValueError, match="threads must be >= 1"):
        Instrument(model, backend="file", out=tmp_path / "x.wav", threads=0, quiet=True, start=False)
    before = torch.get_num_threads()
    want = 1 if before != 1 else 2
    backend = FileBackend(tmp_path / "out.wav", model.sample_rate, channels=2, realtime=False)
    inst = Instrument(model, backend=backend, steps=2, threads=want, quiet=True)
    try:
        assert inst.threads == want and torch.get_num_threads() == want
        inst.wait_blocks(2)
    finally:
        inst.stop()
    assert torch.get_num_threads() == before


def test_latency_presets(model, tmp_path):
    """Both presets cut changes into the block playing (their worst case is the time to make a block plus
    the buffers, with no block to wait for); "low" keeps the tight headroom and halves the model's steps
    (at least 2; steps asked for are played as asked)."""
    backend = FileBackend(tmp_path / "low.wav", model.sample_rate, channels=2, realtime=False)
    low = Instrument(model, backend=backend, latency="low", start=False, quiet=True)
    normal = Instrument(model, backend="file", out=tmp_path / "n.wav", start=False, quiet=True)
    try:
        own = model.sampler_settings().steps
        assert low.engine.splice and low.engine.headroom_ms == 85.0
        assert low.stream.params.sampler.steps == max(2, round(own / 2)) < own
        assert normal.engine.splice and normal.engine.headroom_ms == 170.0
        assert normal.stream.params.sampler.steps == model.sampler_settings().steps
        assert low.latency()["block_ms"] == normal.latency()["block_ms"] == 5.0  # the splice's fade, no block
        assert low.latency()["total_ms"] < normal.latency()["total_ms"]  # less queued
        asked = Instrument(
            model, backend="file", out=tmp_path / "a.wav", latency="low", steps=3, start=False, quiet=True
        )
        assert asked.stream.params.sampler.steps == 3
        asked.stop()
        assert [LATENCY_PRESETS["low"].steps(n) for n in (1, 2, 3, 4, 8)] == [1, 2, 2, 2, 4]
        with pytest.raises(ValueError, match="latency"):
            Instrument(
                model, backend="file", out=tmp_path / "x.wav", latency="instant", start=False, quiet=True
            )
    finally:
        low.stop()
        normal.stop()


def test_a_prompt_far_from_what_the_model_knows_gets_a_line_and_still_plays(model, tmp_path):
    model.styles = {
        "dub": "slow dub with echoing chords",
        "jungle": "fast breakbeats",
        "techno": "fast techno",
    }
    try:
        inst = Instrument(model, backend="file", out=tmp_path / "o.wav", steps=1, start=False, quiet=True)
        assert inst.styles() == model.styles
        inst.prompt("dub techno")
        assert inst.notice is None
        inst.prompt("a baby crying on a train")
        assert inst.notice is not None and "nearest: " in inst.notice
        assert inst.engine._pending[-1].value.dominant == "a baby crying on a train"  # it still plays
    finally:
        model.styles = {}
