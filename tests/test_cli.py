"""`lmdm-live` subcommands, run in-process and as the installed console script."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from osc_harness import free_udp_port
from realtime import check_underruns

from lmdm_live.cli import main
from lmdm_live.model.bundle import LMDMModel
from lmdm_live.model.lmdm import LMDMConfig

SMALL = ["--model", "tiny", "--context", "8", "--block", "4"]  # a random preset, named on purpose


def console_script() -> str:
    """The venv's `lmdm-live`, whatever PATH says: what `pip install -e .` installed is what is tested."""
    beside = Path(sys.executable).parent / "lmdm-live"
    exe = str(beside) if beside.is_file() else shutil.which("lmdm-live")
    assert exe is not None, "the lmdm-live console script is not installed (pip install -e .)"
    return exe


def headless(*args: str) -> list[str]:
    """`lmdm-live` playing without its REPL, on a window small enough (186 ms blocks) to keep real time."""
    return [console_script(), "--context", "16", "--block", "8", "--steps", "2", "--headless", *args]


def test_render_writes_a_deterministic_wav(tmp_path, capsys):
    a, b = tmp_path / "a.wav", tmp_path / "b.wav"
    args = [
        "render",
        *SMALL,
        "--steps",
        "2",
        "--seconds",
        "0.5",
        "--prompt",
        "deep techno:2",
        "--prompt",
        "rain",
        "--change",
        "2=ambient pads",
        "--cfg",
        "2",
    ]
    assert main([*args, "--out", str(a)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert main([*args, "--out", str(b)]) == 0
    audio, sr = sf.read(str(a))
    model = LMDMModel.preset("tiny", lmdm=LMDMConfig(context_frames=8, block_frames=4))
    assert sr == model.sample_rate == info["sample_rate"]
    assert len(audio) == info["blocks"] * 4 * model.hop
    assert np.isfinite(audio).all() and np.abs(audio).max() > 0
    assert a.read_bytes() == b.read_bytes()
    c = tmp_path / "c.wav"
    assert main(["render", *SMALL, "--steps", "2", "--seconds", "0.5", "--seed", "9", "--out", str(c)]) == 0
    assert c.read_bytes() != a.read_bytes()


def test_render_plays_the_shipped_model_unless_told_otherwise(tmp_path, capsys):
    from lmdm_live.live.instrument import DEFAULT_MODEL_FILE

    out = tmp_path / "first.wav"
    assert main(["render", "--steps", "1", "--seconds", "0.5", "--out", str(out)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["model"] == LMDMModel.load(DEFAULT_MODEL_FILE).name != "tiny"


def test_styles_lists_what_a_model_knows_and_ranks_a_prompt(tmp_path, capsys):
    m = LMDMModel.preset("tiny", lmdm=LMDMConfig(mode="causal", context_frames=8, block_frames=4))
    m.styles = {
        "dub": "slow dub, echoing chords",
        "jungle": "fast breakbeats",
        "string_quartet": "four strings",
    }
    m.save(tmp_path / "m.safetensors")
    assert main(["styles", "--model", str(tmp_path / "m.safetensors")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == ["dub", "jungle", "string_quartet"]
    assert (
        main(["styles", "--model", str(tmp_path / "m.safetensors"), "--near", "jungle breaks", "--json"]) == 0
    )
    got = json.loads(capsys.readouterr().out)
    assert got["styles"] == m.styles and got["near"][0][0] == "jungle"
    assert main(["styles", "--model", str(tmp_path / "nope.safetensors")]) == 2


def test_render_a_saved_model(tmp_path, capsys):
    path = tmp_path / "m.safetensors"
    LMDMModel.preset("tiny", lmdm=LMDMConfig(mode="causal", context_frames=8, block_frames=4)).save(path)
    out = tmp_path / "m.wav"
    assert main(["render", "--model", str(path), "--steps", "1", "--seconds", "0.3", "--out", str(out)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["model"] == "tiny" and out.is_file() and info["limiter_db"] is not None
    # the limiter holds a ceiling under the model's peak; off, the file has the model's own peak
    low = tmp_path / "low.wav"
    argv = ["render", "--model", str(path), "--steps", "1", "--seconds", "0.3"]
    assert main([*argv, "--limiter", "0.02", "--out", str(low)]) == 0
    limited = json.loads(capsys.readouterr().out)
    assert main([*argv, "--limiter", "off", "--out", str(out)]) == 0
    off = json.loads(capsys.readouterr().out)
    assert limited["peak"] == off["peak"] > 0.05 and off["limiter_db"] is None
    assert limited["limiter_db"] > 20 * np.log10(off["peak"] / 0.02) - 0.1
    assert np.abs(sf.read(str(low))[0]).max() <= 0.02 + 1 / 32768
    assert np.abs(sf.read(str(out))[0]).max() == pytest.approx(min(off["peak"], 1.0), abs=1e-3)


def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys):
    cases = [
        ["render", "--model", str(tmp_path / "missing.safetensors"), "--out", str(tmp_path / "x.wav")],
        ["render", *SMALL, "--steps", "0", "--out", str(tmp_path / "x.wav")],
        ["render", "--context", "10", "--block", "4", "--mode", "causal", "--out", str(tmp_path / "x.wav")],
        ["render", *SMALL, "--prompt", "x:-1", "--out", str(tmp_path / "x.wav")],
    ]
    for argv in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert err.startswith("lmdm-live: error: ") and "\n" not in err, err
    for ceiling in ("1.5", "loud", "0"):  # refused while parsing, as argparse refuses a bad flag
        with pytest.raises(SystemExit) as e:
            main(["render", *SMALL, "--limiter", ceiling, "--out", str(tmp_path / "x.wav")])
        assert e.value.code == 2
        assert "expected a peak ceiling in (0, 1] or 'off'" in capsys.readouterr().err.splitlines()[-1]
    bogus = tmp_path / "bogus.safetensors"
    bogus.write_bytes(b"not a safetensors file")
    assert main(["render", "--model", str(bogus), "--out", str(tmp_path / "x.wav")]) == 2


def test_bad_out_and_seconds_are_one_line_and_exit_2(tmp_path, capsys):
    """A device, a folder that does not exist, a format the instrument does not write, a negative length:
    each one line and exit 2, before any model loads; nothing is created."""
    missing = tmp_path / "nonexistent" / "dir" / "x.wav"
    play = ["play", "--headless", "--seconds", "1", "--osc-port", "0", "--backend", "file"]
    cases = [
        (["render", *SMALL, "--out", "/dev/null"], "/dev/null is not a regular file"),
        (["render", *SMALL, "--out", str(missing)], "does not exist"),
        (["render", *SMALL, "--out", str(tmp_path / "x.mp3")], "must name a .wav file"),
        (["render", *SMALL, "--seconds", "-5", "--out", str(tmp_path / "neg.wav")], "--seconds must be"),
        (["render", *SMALL, "--seconds", "0", "--out", str(tmp_path / "zero.wav")], "--seconds must be"),
        ([*play, "--out", "/dev/null"], "/dev/null is not a regular file"),
        ([*play, "--out", str(missing)], "does not exist"),
        ([*play, "--out", str(tmp_path / "x.mp3")], "must name a .wav file"),
        (["replay", str(tmp_path / "ev.jsonl"), str(tmp_path / "x.flac")], "must name a .wav file"),
    ]
    for argv, why in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert err.startswith("lmdm-live: error: ") and "\n" not in err and why in err, (argv, err)
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no folder made, nothing rendered


def test_bench_json(capsys):
    args = ["bench", "--json", *SMALL, "--steps", "2", "--blocks", "3", "--warmup", "1", "--no-decode"]
    # float32: the cache's exactness against the masked pass (int8 rounds each call's rows together)
    assert main([*args, "--dtype", "float32"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert set(r["modes"]) == {"uncached", "encdec", "causal"}
    for mode, e in r["modes"].items():
        assert e["ms_per_block"] > 0 and e["rtf"] > 0, mode
    assert r["modes"]["uncached"]["query_tokens_per_block"] == (8 + 4 + 1) * 2
    assert r["modes"]["encdec"]["query_tokens_per_block"] == 8 + 5 * 2
    assert r["modes"]["causal"]["query_tokens_per_block"] == 4 + 5 * 2
    assert r["modes"]["encdec"]["max_rel_err"] < 1e-4 and r["modes"]["causal"]["max_rel_err"] < 1e-4
    assert r["modes"]["causal"]["speedup_vs_uncached"] > 0


def test_bench_plays_a_model_file_at_its_own_settings(tmp_path, capsys):
    """With no flags, bench times what the instrument would play: the file's window, sampler and steps."""
    from lmdm_live.model.bundle import LMDMModel
    from lmdm_live.model.lmdm import LMDMConfig
    from lmdm_live.model.precision import dtype_name, resolve_dtype

    model = LMDMModel.preset("tiny", lmdm=LMDMConfig(mode="causal", context_frames=12, block_frames=4))
    model.sampler = {"sampler": "euler", "steps": 3, "cfg": 2.0}
    path = tmp_path / "m.lmdm.safetensors"
    model.save(path)
    base = ["bench", "--json", "--model", str(path), "--blocks", "2", "--warmup", "1", "--no-decode"]
    assert main(base) == 0
    r = json.loads(capsys.readouterr().out)
    assert (r["context_frames"], r["block_frames"], r["steps"], r["cfg"], r["sampler"]) == (
        12,
        4,
        3,
        2.0,
        "euler",
    )
    assert r["dtype"] == dtype_name(resolve_dtype("auto"))  # what the instrument gets on this CPU
    assert main([*base, "--steps", "2", "--cfg", "1", "--dtype", "float32"]) == 0  # flags override
    r = json.loads(capsys.readouterr().out)
    assert (r["context_frames"], r["steps"], r["cfg"], r["dtype"]) == (12, 2, 1.0, "float32")
    assert main(["bench", "--model", str(tmp_path / "none.safetensors")]) == 2
    assert "model file not found" in capsys.readouterr().err


def test_console_script_plays_headless_to_a_wav_and_replays(tmp_path):
    out, log = tmp_path / "play.wav", tmp_path / "ev.jsonl"
    p = subprocess.run(
        headless(
            "--backend",
            "file",
            "--out",
            str(out),
            "--headroom",
            "safe",
            "--osc-port",
            "0",
            "--seconds",
            "2",
            "--prompt",
            "dub",
            "--log",
            str(log),
        ),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert p.returncode == 0, p.stderr
    assert "playing" in p.stderr and "0 underruns" in p.stderr
    played, sr = sf.read(str(out), dtype="float32")
    from lmdm_live.live.instrument import default_model_ref
    from lmdm_live.model.checkpoint import load_checkpoint_config

    rate = load_checkpoint_config(default_model_ref())["sample_rate"]  # a file plays at the model's rate
    assert sr == rate and len(played) > sr  # about two seconds, paced in real time
    again = tmp_path / "again.wav"
    p = subprocess.run(
        [console_script(), "replay", str(log), str(again)], capture_output=True, text=True, timeout=300
    )
    assert p.returncode == 0, p.stderr
    rebuilt, _ = sf.read(str(again), dtype="float32")
    n = len(played)
    assert len(rebuilt) >= n
    assert np.abs(played - np.clip(rebuilt[:n], -1, 1)).max() <= 1.0 / 32767 + 1e-6  # 16-bit file vs float


def test_render_script(tmp_path, capsys):
    script = tmp_path / "changes.py"
    script.write_text(
        'at(0, prompt="dub techno")\nat(2, prompts={"dub techno": 1, "choir": 0.5}, cfg=2)\n'
        'at("1.0s", steps=1)\n'
    )
    a, b = tmp_path / "a.wav", tmp_path / "b.wav"
    args = ["render", *SMALL, "--steps", "2", "--seconds", "1.2", "--script", str(script)]
    assert main([*args, "--out", str(a)]) == 0
    assert main(["render", *SMALL, "--steps", "2", "--seconds", "1.2", "--out", str(b)]) == 0
    assert a.read_bytes() != b.read_bytes()
    script.write_text("at(0, tempo=3)\n")
    assert main([*args, "--out", str(a)]) == 2
    assert "tempo" in capsys.readouterr().err


@pytest.mark.jack
def test_bench_engine_figures(jack_server, capsys):
    argv = ["bench", "--json", "--engine-only", "--engine", "4", "--steps", "2"]
    assert main(argv) == 0
    e = json.loads(capsys.readouterr().out)["engine"]
    assert e["backend"] == "jack" and e["callbacks"] > 100
    assert e["faults"] == 0
    check_underruns(e)
    assert 0 < e["callback_ms_mean"] <= e["callback_ms_max"]
    assert e["ring_min_ms"] > 0 and e["blocks"] >= 3


def test_no_audio_device_falls_back_to_a_wav_file(tmp_path):
    """No JACK server and no sound card: one line says so, and the instrument records to a file instead."""
    import os

    env = {**os.environ, "JACK_DEFAULT_SERVER": "lmdm-no-such-server", "JACK_NO_START_SERVER": "1"}
    p = subprocess.run(
        headless("--seconds", "1", "--osc-port", "0"),
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
        env=env,
    )
    assert p.returncode == 0, p.stderr
    lines = [line for line in p.stderr.splitlines() if "no audio device" in line.lower()]
    assert len(lines) == 1 and "recording to" in lines[0], p.stderr
    wavs = list((tmp_path / "out").glob("lmdm-live-*.wav"))
    assert len(wavs) == 1
    audio, _ = sf.read(str(wavs[0]))
    assert len(audio) > 0 and np.abs(audio).max() > 0


def test_play_with_osc_and_a_patch(tmp_path):
    """`lmdm-live --headless --osc-port P --patch acid`: the patch plays, OSC changes land, status replies."""
    import socket

    from pythonosc.osc_message import OscMessage
    from pythonosc.osc_message_builder import OscMessageBuilder

    from lmdm_live.live.replay import read_log

    port = free_udp_port()
    log = tmp_path / "ev.jsonl"
    argv = headless(
        "--backend",
        "file",
        "--out",
        str(tmp_path / "x.wav"),
        "--seconds",
        "8",
        "--headroom",
        "safe",
        "--osc-port",
        str(port),
        "--patch",
        "acid",
        "--clock",
        "tidal",
        "--log",
        str(log),
    )
    p = subprocess.Popen(argv, stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(0.5)

    def send(address, *args):
        b = OscMessageBuilder(address)
        for a in args:
            b.add_arg(a)
        sock.sendto(b.build().dgram, ("127.0.0.1", port))

    reply = None
    try:
        deadline = time.monotonic() + 60

        # until the server is up and reports both: a message sent before its socket was bound is lost, and
        # a status can leave before the block that takes the new settings, so all three are sent again
        def applied(r: dict | None) -> bool:
            return r is not None and r["cfg"] == 2.5 and abs(r["bpm"] - 132.0) < 1e-6

        while not applied(reply) and time.monotonic() < deadline:
            send("/lmdm/cfg", 2.5)
            send("/lmdm/play", "cps", 0.55, "cycle", 3.0, "s", "lmdm")  # Tidal drives the tempo: 132 bpm
            time.sleep(0.3)
            send("/lmdm/status")
            try:
                while True:
                    msg = OscMessage(sock.recvfrom(65536)[0])
                    if msg.address == "/lmdm/status":
                        reply = dict(zip(msg.params[::2], msg.params[1::2], strict=False))
                        break
            except TimeoutError:
                pass
        send("/lmdm/steps", 0)  # out of range: an error reply, nothing changes
        errors = []
        try:
            while not errors:
                msg = OscMessage(sock.recvfrom(65536)[0])
                if msg.address == "/lmdm/error":
                    errors.append(msg.params)
        except TimeoutError:
            pass
    finally:
        _, err = p.communicate(timeout=120)
        sock.close()
    assert p.returncode == 0, err
    assert reply is not None and reply["cfg"] == 2.5, reply
    assert abs(reply["bpm"] - 132.0) < 1e-6, reply  # through the clock, whose source is Tidal
    assert errors and errors[0][0] == "/lmdm/steps"
    events = read_log(log)
    prompts = [e["value"]["prompts"] for e in events if e["type"] == "params"]
    assert any("acid house" in t for p_ in prompts for t, _ in p_)  # the patch played
    assert any(e["value"]["sampler"]["cfg"] == 2.5 for e in events if e["type"] == "params")
