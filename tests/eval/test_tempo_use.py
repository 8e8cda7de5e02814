"""`eval tempo`: how much a model reads its tempo channels, by its loss when they lie."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from deaf import assert_flat, deafened

from lmdm_live.cli import main
from lmdm_live.eval.tempo_use import VARIANTS, TempoUseConfig, retempo, tempo_use
from lmdm_live.model.bundle import LMDMModel
from lmdm_live.model.extras import tempo_grid
from lmdm_live.model.lmdm import LMDMConfig
from lmdm_live.train.dataset import beat_grid
from lmdm_live.train.latent_set import LatentSet

WINDOW = LMDMConfig(mode="causal", context_frames=8, block_frames=4)
CFG = TempoUseConfig(windows=4, seeds=2, targets=2)


@pytest.fixture(scope="module")
def model() -> LMDMModel:
    return LMDMModel.preset("tiny", lmdm=WINDOW, seed=0, extras={"tempo": True})


def latent_set(model: LMDMModel, n: int = 6, frames: int = 48) -> LatentSet:
    g = torch.Generator().manual_seed(0)
    io, dim = model.dit.cfg.io_channels, model.dit.cfg.cond_token_dim
    controls = []
    for i in range(n):
        bpm, beat, bar = beat_grid(frames, model.hop, model.sample_rate, 90.0 + 10 * i, 4)
        rows = np.stack([bpm, beat, bar, *np.zeros((4, frames), np.float32)])
        controls.append(torch.from_numpy(rows))
    latents = [torch.randn(io, frames, generator=g) for _ in range(n)]
    return LatentSet(latents, torch.randn(n, 5, dim, generator=g), controls)


def test_retempo_rebuilds_the_channels_it_reads(model):
    sl = model.layout.offsets()["tempo"]
    n, bpm, start = 40, 100.0, 5.25  # the second bar, a quarter into its second beat
    per_frame = bpm * model.hop / model.sample_rate / 60.0
    extras = model.layout.build(n, tempo=tempo_grid(start, n, per_frame, bpm))[None]
    assert torch.allclose(retempo(extras, model), extras, atol=1e-5)
    shifted = retempo(extras, model, shift=0.5)[0, sl]
    assert torch.allclose(shifted[:2], -extras[0, sl][:2], atol=1e-5)  # half a beat: the beat turned over
    faster = retempo(extras, model, factor=4 / 3)[0, sl]
    expect = tempo_grid(start, n, per_frame * 4 / 3, bpm * 4 / 3)
    assert torch.allclose(faster, expect, atol=1e-5) and not torch.allclose(faster, extras[0, sl], atol=0.1)


def test_lying_channels_cost_only_a_model_that_reads_them(model):
    data = latent_set(model)
    report = tempo_use(model, data, CFG)
    assert set(report["with context"]) == set(VARIANTS) == set(report["no context"])
    assert abs(report["cost"]["with context"]) > 1e-4  # a random model's loss moves when its inputs do
    # the same model with its tempo inputs cut: nothing it computes depends on them
    deaf = deafened(LMDMModel.preset("tiny", lmdm=WINDOW, seed=0, extras={"tempo": True}), "tempo")
    again = tempo_use(deaf, data, CFG)
    assert_flat(again)
    for label in ("with context", "no context"):
        assert again[label]["true"] == pytest.approx(report[label]["true"], rel=0.5)


def test_eval_tempo_cli(model, tmp_path, capsys):
    model.save(tmp_path / "m.lmdm.safetensors")
    latent_set(model).save(tmp_path / "lat.safetensors")
    args = ["eval", "tempo", "--model", str(tmp_path / "m.lmdm.safetensors"), "--data"]
    args += [str(tmp_path / "lat.safetensors"), "--windows", "4", "--seeds", "1", "--targets", "2"]
    assert main([*args, "--out", str(tmp_path / "t.json")]) == 0
    assert "lying channels cost" in capsys.readouterr().out
    assert set(json.loads((tmp_path / "t.json").read_text())["cost"]) == {"with context", "no context"}
    plain = LMDMModel.preset("tiny", lmdm=WINDOW, seed=0)
    plain.save(tmp_path / "plain.lmdm.safetensors")
    args[3] = str(tmp_path / "plain.lmdm.safetensors")
    assert main(args) == 2
    assert "has no tempo channels" in capsys.readouterr().err
