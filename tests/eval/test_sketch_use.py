"""`eval sketch`: how much a model reads its sketch channels, by its loss when the sketch lies."""

from __future__ import annotations

import json

import pytest
import torch
from deaf import assert_flat, deafened
from melodies import melody_set

from lmdm_live.cli import main
from lmdm_live.eval.sketch_use import FIFTH, SketchUseConfig, sketch_use, sketch_variants
from lmdm_live.model.bundle import LMDMModel
from lmdm_live.model.extras import sketch_channels
from lmdm_live.model.lmdm import LMDMConfig

WINDOW = LMDMConfig(mode="causal", context_frames=8, block_frames=4)
CFG = SketchUseConfig(windows=4, seeds=2, targets=2)


@pytest.fixture(scope="module")
def model() -> LMDMModel:
    return LMDMModel.preset("tiny", lmdm=WINDOW, seed=0, extras={"sketch": True})


def test_the_lying_sketches_are_what_they_say(model):
    sl = model.layout.offsets()["sketch"]
    n = 20
    pitch = torch.linspace(55.0, 67.0, n)
    voiced = (torch.arange(n) % 5 != 0).float()
    extras = torch.stack(
        [
            model.layout.build(
                n, sketch=sketch_channels(pitch + k, voiced, -20 * torch.ones(n), 1e3 * torch.ones(n))
            )
            for k in range(3)
        ]
    )
    v = sketch_variants(extras, model)
    assert torch.equal(v["true"], extras)
    assert torch.equal(v["another window's"][1, sl], extras[0, sl])
    assert torch.equal(v["another window's"][0, sl], extras[2, sl])
    raised = v["a fifth up"][:, sl.start + 1] - extras[:, sl.start + 1]
    assert torch.allclose(raised[:, voiced > 0], torch.tensor(FIFTH))  # 7/12 on the (midi - 60) / 12 scale
    assert (raised[:, voiced == 0] == 0).all()  # unvoiced frames carry no pitch
    assert (v["off"][:, sl] == 0).all()
    others = [i for i in range(extras.shape[1]) if not sl.start <= i < sl.stop]
    assert all(torch.equal(x[:, others], extras[:, others]) for x in v.values())


def test_a_lying_sketch_costs_only_a_model_that_reads_it(model):
    data = melody_set(model)
    report = sketch_use(model, data, CFG)
    assert set(report["with context"]) == {"true", "another window's", "a fifth up", "off"}
    assert abs(report["cost"]["with context"]) > 1e-4  # a random model's loss moves when its inputs do
    # the same model with its sketch inputs cut: nothing it computes depends on them
    deaf = deafened(LMDMModel.preset("tiny", lmdm=WINDOW, seed=0, extras={"sketch": True}), "sketch")
    assert_flat(sketch_use(deaf, data, CFG))


def test_eval_sketch_cli(model, tmp_path, capsys):
    model.save(tmp_path / "m.lmdm.safetensors")
    melody_set(model).save(tmp_path / "lat.safetensors")
    args = ["eval", "sketch", "--model", str(tmp_path / "m.lmdm.safetensors"), "--data"]
    args += [str(tmp_path / "lat.safetensors"), "--windows", "4", "--seeds", "1", "--targets", "2"]
    assert main([*args, "--out", str(tmp_path / "s.json")]) == 0
    assert "lying channels cost" in capsys.readouterr().out
    assert set(json.loads((tmp_path / "s.json").read_text())["cost"]) == {"with context", "no context"}
    melody_set(model, leads=False).save(tmp_path / "mixes.safetensors")
    assert main([*args[:5], str(tmp_path / "mixes.safetensors"), *args[6:]]) == 2
    assert "no lead stems" in capsys.readouterr().err
    plain = LMDMModel.preset("tiny", lmdm=WINDOW, seed=0)
    plain.save(tmp_path / "plain.lmdm.safetensors")
    args[3] = str(tmp_path / "plain.lmdm.safetensors")
    assert main(args) == 2
    assert "has no sketch channels" in capsys.readouterr().err
