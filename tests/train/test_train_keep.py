"""A kept resume point: half the bytes, the same model to float16 rounding, and a run that goes on from it."""

from __future__ import annotations

import json

import pytest
import torch
from test_train_stage1 import patterned_set, small_model

from lmdm_live.model.bundle import CODEC_PREFIX, VAE_PREFIX
from lmdm_live.model.checkpoint import load_checkpoint
from lmdm_live.train.keep import keep_run
from lmdm_live.train.stage1 import DECAY_FLOOR, WARMUP_STEPS, Stage1Config, Stage1Trainer


@pytest.fixture
def trained(tmp_path):
    data = patterned_set()
    trainer = Stage1Trainer(small_model("causal"), Stage1Config(batch=4, lr=1e-3, seed=2, targets=3))
    for _ in range(6):
        trainer.train_step(data)
    trainer.save(tmp_path / "run")
    return trainer, data


def test_kept_weights_are_half_size_and_round_to_the_run(trained, tmp_path):
    trainer, _ = trained
    progress = keep_run(tmp_path / "run", tmp_path / "kept")
    assert progress["step"] == 6 and len(progress["history"]) == 6 and "optimizer" not in progress
    assert json.loads((tmp_path / "kept" / "progress.json").read_text()) == progress
    run, _ = load_checkpoint(tmp_path / "run" / "model.safetensors")
    kept, _ = load_checkpoint(tmp_path / "kept" / "model.safetensors")
    assert kept.keys() == run.keys()
    for k, v in run.items():
        if k.startswith((VAE_PREFIX, CODEC_PREFIX)):  # the codec is kept exactly
            assert kept[k].dtype == v.dtype and torch.equal(kept[k], v), k
        else:
            assert kept[k].dtype == torch.float16, k
            assert torch.allclose(kept[k].float(), v, rtol=2**-10, atol=1e-7), k
    dit = sum(v.numel() for k, v in run.items() if not k.startswith((VAE_PREFIX, CODEC_PREFIX)))
    assert (
        sum(v.numel() * v.element_size() for v in kept.values())
        < sum(v.numel() * v.element_size() for v in run.values()) - dit
    )  # at least two bytes saved on every DiT weight


def test_a_run_resumes_from_a_kept_point_with_a_warm_up(trained, tmp_path):
    trainer, data = trained
    keep_run(tmp_path / "run", tmp_path / "kept")
    resumed = Stage1Trainer.resume(tmp_path / "kept")
    assert resumed.step == 6 and resumed.warm_from == 6
    loss = resumed.train_step(data)
    # the same step's batch and noise on float16-rounded weights: the loss the run would have had
    assert loss == pytest.approx(trainer.train_step(data), rel=1e-2)
    assert resumed.opt.param_groups[0]["lr"] == pytest.approx(1e-3 / WARMUP_STEPS)
    assert resumed.lr_now() == pytest.approx(2e-3 / WARMUP_STEPS)
    resumed.step = 6 + WARMUP_STEPS
    assert resumed.lr_now() == pytest.approx(1e-3)
    full = Stage1Trainer.resume(tmp_path / "run")  # a whole run folder resumes its moments, unramped
    assert full.warm_from is None and full.lr_now() == pytest.approx(1e-3)


def test_a_decaying_run_brings_the_rate_down_on_a_cosine(trained, tmp_path):
    trainer, data = trained
    full = Stage1Trainer.resume(tmp_path / "run")
    full.decay = (6, 16)
    assert full.lr_now() == pytest.approx(1e-3)  # the decay starts at the full rate
    full.train_step(data)
    assert full.opt.param_groups[0]["lr"] == pytest.approx(1e-3)  # and the optimizer took it
    assert full.lr_now() < 1e-3
    full.step = 11  # half way: half way between the rate and its floor
    assert full.lr_now() == pytest.approx(1e-3 * (DECAY_FLOOR + (1 - DECAY_FLOOR) / 2))
    full.step = 16
    assert full.lr_now() == pytest.approx(1e-3 * DECAY_FLOOR)
    full.step = 40  # past the end it stays at the floor
    assert full.lr_now() == pytest.approx(1e-3 * DECAY_FLOOR)
    full.train_step(data)
    assert full.opt.param_groups[0]["lr"] == pytest.approx(1e-3 * DECAY_FLOOR)


def test_keeping_a_folder_that_is_no_run_says_so(tmp_path):
    with pytest.raises(FileNotFoundError, match="no progress.json"):
        keep_run(tmp_path, tmp_path / "kept")
