"""Autoencoder training: the loss falls and held-out reconstruction improves; the metrics mean what they say."""

from __future__ import annotations

import math

import pytest
import torch

from lmdm_live.model.oobleck import OobleckConfig, OobleckVAE
from lmdm_live.train.autoencoder import AEConfig, AETrainer, multires_stft_loss, si_sdr


def tones(n: int, samples: int, seed: int) -> torch.Tensor:
    """Decaying harmonic notes at random pitches: simple, musical, not trivially constant."""
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(samples) / 8000.0
    out = []
    for _ in range(n):
        f0 = 110 * 2 ** (float(torch.randint(0, 24, (1,), generator=g)) / 12)
        env = torch.exp(-t * float(torch.rand(1, generator=g) * 6 + 2))
        x = sum(torch.sin(2 * math.pi * f0 * k * t) / k for k in (1, 2, 3)) * env * 0.3
        out.append(x[None])
    return torch.stack(out)


def test_metrics():
    x = tones(2, 4096, 0)
    assert multires_stft_loss(x, x, (256, 64)) < 1e-4
    assert si_sdr(x, x).min() > 60
    assert si_sdr(x + 0.1 * torch.randn_like(x), x).mean() < si_sdr(x + 0.01 * torch.randn_like(x), x).mean()
    assert si_sdr(3 * x, x).min() > 60  # scale-invariant


@pytest.mark.slow  # about 25 s; the decoder-only run below keeps the trainer's step in the default run
def test_autoencoder_loss_falls_and_reconstruction_improves():
    torch.manual_seed(0)
    vae = OobleckVAE(
        OobleckConfig(in_channels=1, out_channels=1, channels=8, c_mults=(1, 2), strides=(2, 4), latent_dim=8)
    )
    trainer = AETrainer(vae, AEConfig(lr=2e-3, ffts=(256, 64), kl_weight=1e-4))
    held_out = tones(4, 4096, 99)
    before = trainer.evaluate(held_out)
    for step in range(50):
        trainer.train_step(tones(4, 4096, step))
    after = trainer.evaluate(held_out)
    first = sum(h["stft"] for h in trainer.history[:10]) / 10
    last = sum(h["stft"] for h in trainer.history[-10:]) / 10
    assert last < 0.7 * first, (first, last)
    assert after["stft_distance"] < 0.8 * before["stft_distance"], (before, after)
    assert math.isfinite(after["si_sdr_db"])


def test_decoder_only_keeps_the_latent_space():
    """Fine-tuning the decoder must not move the encoder: the latents every LMDM was trained on stay valid."""
    torch.manual_seed(0)
    vae = OobleckVAE(
        OobleckConfig(in_channels=1, out_channels=1, channels=8, c_mults=(1, 2), strides=(2, 4), latent_dim=8)
    )
    x = tones(2, 4096, 5)
    with torch.no_grad():
        z_before = vae.encode(x)
    enc_before = {k: v.clone() for k, v in vae.encoder.state_dict().items()}
    dec_before = {k: v.clone() for k, v in vae.decoder.state_dict().items()}
    trainer = AETrainer(vae, AEConfig(lr=2e-3, ffts=(256, 64), decoder_only=True))
    for step in range(30):
        trainer.train_step(tones(4, 4096, step))
    assert all(torch.equal(v, enc_before[k]) for k, v in vae.encoder.state_dict().items())
    assert any(not torch.equal(v, dec_before[k]) for k, v in vae.decoder.state_dict().items())
    with torch.no_grad():
        assert torch.equal(vae.encode(x), z_before)
    first = sum(h["stft"] for h in trainer.history[:5]) / 5
    last = sum(h["stft"] for h in trainer.history[-5:]) / 5
    assert last < first, (first, last)
