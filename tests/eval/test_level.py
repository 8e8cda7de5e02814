"""`eval level`: a model's level is stored in its file, every block of its stream is scaled by it, and the
level `eval level` finds brings the model's median loudness to the real test renders'."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf

from lmdm_live.cli import main
from lmdm_live.eval.level import LevelConfig, calibrate, rms
from lmdm_live.eval.play import EvalConfig, generate, stream_params
from lmdm_live.live.stream import LMDMStream, StreamParams
from lmdm_live.model.bundle import LMDMModel
from lmdm_live.model.lmdm import LMDMConfig
from lmdm_live.model.samplers import SamplerSettings

WINDOW = LMDMConfig(mode="causal", context_frames=16, block_frames=8)
STYLES = ("techno", "ambient", "rock")


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    import torch

    from lmdm_live.model.oobleck import OobleckConfig, OobleckVAE

    model = LMDMModel.preset("tiny", lmdm=WINDOW, seed=0)
    torch.manual_seed(0)  # a narrow autoencoder: the plumbing is the same, the decoder much faster
    model.vae = OobleckVAE(OobleckConfig.small(audio_channels=model.vae.cfg.in_channels, channels=8)).eval()
    model.sampler = {"steps": 1, "cfg": 1.0}
    path = tmp_path_factory.mktemp("m") / "m.safetensors"
    model.save(path)
    return path


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """Three test renders of known loudness (sines at RMS 0.05, 0.1 and 0.4: the median is 0.1)."""
    root = tmp_path_factory.mktemp("data")
    (root / "audio").mkdir()
    examples = []
    for i, (style, amp) in enumerate(zip(STYLES, (0.05, 0.1, 0.4), strict=True)):
        t = np.arange(6 * 16000) / 16000
        sf.write(str(root / "audio" / f"{i:06d}.wav"), amp * np.sqrt(2) * np.sin(2 * np.pi * 220 * t), 16000)
        labels = {"style": style, "lead": "piano", "tempo_bucket": "mid", "mode": "major", "bpm": 110.0}
        examples.append(
            {"id": f"{i:06d}", "split": "test", "caption": f"{style} with piano", "labels": labels}
        )
    index = {"format": "lmdm-dataset", "version": 1, "sample_rate": 16000, "examples": examples}
    (root / "index.json").write_text(json.dumps(index))
    return root


def test_the_level_is_kept_in_the_file_and_scales_every_block_exactly(model_file, tmp_path):
    model = LMDMModel.load(model_file)
    assert model.level == 1.0
    model.level = 0.25
    model.save(tmp_path / "quiet.safetensors")
    quiet = LMDMModel.load(tmp_path / "quiet.safetensors")
    assert quiet.level == 0.25
    model.level = -1.0  # a file with a level no stream can play is refused when it loads
    model.save(tmp_path / "bad.safetensors")
    with pytest.raises(ValueError, match="level must be a positive number"):
        LMDMModel.load(tmp_path / "bad.safetensors")
    params = StreamParams.of("techno", sampler=SamplerSettings(steps=1))
    loud_stream = LMDMStream(LMDMModel.load(model_file), quiet.text_encoder(), seed=3, params=params)
    quiet_stream = LMDMStream(quiet, quiet.text_encoder(), seed=3, params=params)
    for _ in range(3):
        a, b = loud_stream.next_block(), quiet_stream.next_block()
        assert np.array_equal(b, a * np.float32(0.25))
    assert np.array_equal(quiet_stream.flush(), loud_stream.flush() * np.float32(0.25))


def test_calibrate_matches_the_real_median_and_measures_the_raw_model(model_file, data_dir):
    model = LMDMModel.load(model_file)
    model.level = 3.0  # a level already set is not what is measured
    cfg = LevelConfig(prompts=2, seconds=2.0, skip=0.5)
    report = calibrate(model, model.text_encoder(), data_dir, cfg)
    assert model.level == 3.0  # left as it was
    assert report["real_rms"] == pytest.approx(0.1, rel=0.02)
    assert len(report["streams"]) == 2 and report["model_rms"] > 0
    assert report["level"] == pytest.approx(report["real_rms"] / report["model_rms"])
    # played at the level found, a stream is its raw loudness times that level
    model.level = report["level"]
    params = stream_params({"prompt": report["streams"][1]["prompt"], "bpm": 110.0}, EvalConfig(), model)
    blocks = int(np.ceil(2.0 / model.block_seconds))
    audio = generate(model, model.text_encoder(), params, blocks, seed=1)  # prompt 1 plays seed 0 + 1
    assert rms(audio[int(0.5 * model.sample_rate) :]) == pytest.approx(
        report["streams"][1]["rms"] * report["level"], rel=1e-4
    )


def test_eval_level_cli_writes_only_where_told(model_file, data_dir, tmp_path, capsys):
    args = ["eval", "level", "--model", str(model_file), "--data", str(data_dir), "--prompts", "1"]
    args += ["--seconds", "3.1", "--dtype", "float32"]
    assert main(args) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["level"] > 0 and "written" not in report
    out = tmp_path / "levelled.safetensors"
    assert main([*args, "--write", str(out)]) == 0
    assert LMDMModel.load(out).level == pytest.approx(json.loads(capsys.readouterr().out)["level"])
    assert main([*args, "--write", str(tmp_path / "nope" / "m.safetensors")]) == 2
    assert "does not exist" in capsys.readouterr().err
    with pytest.raises(ValueError, match="seconds > skip"):
        LevelConfig(seconds=2.0, skip=2.0)
