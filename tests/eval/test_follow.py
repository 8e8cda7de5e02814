"""`eval follow`: the tempo heard in streams asked for several bpm, per tempo-guidance weight."""

from __future__ import annotations

import json
import math

import pytest

from lmdm_live.cli import main
from lmdm_live.eval.follow import FollowConfig, summarise
from lmdm_live.model.bundle import LMDMModel
from lmdm_live.model.lmdm import LMDMConfig

WINDOW = LMDMConfig(mode="causal", context_frames=16, block_frames=8)


def tiny_with_tempo(path, tempo: bool = True):
    """The tiny preset (with tempo channels) and an autoencoder a quarter as wide, saved: its decoder was
    most of each block's time, and the plumbing is the same whatever the weights."""
    import torch

    from lmdm_live.model.oobleck import OobleckConfig, OobleckVAE

    model = LMDMModel.preset("tiny", lmdm=WINDOW, seed=0, extras={"tempo": True} if tempo else None)
    torch.manual_seed(0)
    model.vae = OobleckVAE(OobleckConfig.small(audio_channels=model.vae.cfg.in_channels, channels=8)).eval()
    model.save(path)
    return str(path)


def row(w: float, error: float, octave: float, peak: float) -> dict:
    return {"tempo_guidance": w, "error": error, "octave_error": octave, "peak": peak}


def test_summarise_takes_medians_and_shares_per_weight():
    streams = [
        row(0.0, 0.30, 0.30, 1.0),
        row(0.0, 0.50, 0.02, 2.0),
        row(0.0, math.nan, math.nan, 3.0),  # no onsets: counted, never within
        row(10.0, 0.02, 0.02, 4.0),
        row(10.0, 0.04, 0.04, 6.0),
    ]
    s = summarise(streams, tolerance=0.05)
    assert list(s) == ["0", "10"]
    assert s["0"]["error_median"] == pytest.approx(0.40) and s["0"]["within"] == 0.0
    assert s["0"]["octave_error_median"] == pytest.approx(0.16) and s["0"]["octave_within"] == pytest.approx(
        1 / 3
    )
    assert s["0"]["peak_median"] == 2.0 and s["0"]["streams"] == 3
    assert s["10"]["error_median"] == pytest.approx(0.03) and s["10"]["within"] == 1.0


def test_config_needs_a_few_beats():
    with pytest.raises(ValueError, match="exceed skip"):
        FollowConfig(seconds=5.0, skip=2.0)


def test_eval_follow_cli(tmp_path, capsys):
    args = [
        "eval",
        "follow",
        "--model",
        tiny_with_tempo(tmp_path / "m.lmdm.safetensors"),
        "--bpm",
        "100",
        "150",
    ]
    args += ["--tempo-guidance", "0", "8", "--prompts", "1", "--seconds", "6.5", "--steps", "2"]
    args += ["--dtype", "float32"]
    assert main([*args, "--out", str(tmp_path / "f.json")]) == 0
    assert "octave-folded" in capsys.readouterr().out
    report = json.loads((tmp_path / "f.json").read_text())
    streams = report["streams"]
    assert [(s["tempo_guidance"], s["bpm"]) for s in streams] == [(0, 100), (0, 150), (8, 100), (8, 150)]
    for s in streams:  # each error is the heard tempo's against the asked one
        assert s["error"] == pytest.approx(abs(s["heard_bpm"] - s["bpm"]) / s["bpm"], abs=1e-3)
    # the weight reached the stream: the same seed and prompt made other music with it
    assert streams[0]["peak"] != streams[2]["peak"] and streams[1]["peak"] != streams[3]["peak"]
    assert set(report["summary"]) == {"0", "8"}
    # no tempo channels, or a weight out of range: one line, no run
    args[3] = tiny_with_tempo(tmp_path / "plain.lmdm.safetensors", tempo=False)
    assert main(args) == 2
    assert "has no tempo channels" in capsys.readouterr().err
    assert main([*args[:7], "--tempo-guidance=-1"]) == 2
    assert "tempo_guidance must be in" in capsys.readouterr().err
