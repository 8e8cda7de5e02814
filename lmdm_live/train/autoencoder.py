"""Autoencoder training: a small Oobleck VAE fitted with a multi-resolution STFT loss and a KL term.

The same `OobleckVAE` the streams decode with (SAOS's architecture, smaller config). Reconstruction is
reported as a multi-resolution STFT distance and SI-SDR, so numbers are comparable across runs.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from ..model.oobleck import OobleckVAE


def _stft_mag(x: Tensor, n_fft: int) -> Tensor:
    window = torch.hann_window(n_fft, device=x.device, dtype=x.dtype)
    spec = torch.stft(
        x.reshape(-1, x.shape[-1]), n_fft, hop_length=n_fft // 4, window=window, return_complex=True
    )
    return spec.abs().clamp(min=1e-7)


def multires_stft_loss(pred: Tensor, target: Tensor, ffts: tuple[int, ...] = (2048, 512, 128)) -> Tensor:
    """Spectral convergence + log-magnitude L1, averaged over resolutions (audio (B, ch, n))."""
    total = pred.new_zeros(())
    for n_fft in ffts:
        p, t = _stft_mag(pred, n_fft), _stft_mag(target, n_fft)
        sc = torch.linalg.norm(t - p) / torch.linalg.norm(t).clamp(min=1e-7)
        total = total + sc + F.l1_loss(p.log(), t.log())
    return total / len(ffts)


def si_sdr(pred: Tensor, target: Tensor) -> Tensor:
    """Scale-invariant SDR in dB, per example (audio (B, ch, n), channels flattened)."""
    p, t = pred.reshape(pred.shape[0], -1), target.reshape(target.shape[0], -1)
    p, t = p - p.mean(1, keepdim=True), t - t.mean(1, keepdim=True)
    alpha = (p * t).sum(1, keepdim=True) / t.square().sum(1, keepdim=True).clamp(min=1e-12)
    s = alpha * t
    return 10 * torch.log10(s.square().sum(1) / (p - s).square().sum(1).clamp(min=1e-12))


@dataclass(frozen=True)
class AEConfig:
    lr: float = 1e-4
    kl_weight: float = 1e-4
    ffts: tuple[int, ...] = (2048, 512, 128)
    batch: int = 8
    grad_clip: float = 1.0
    seed: int = 0


class AETrainer:
    """Adam on the whole VAE; each step encodes (sampling the posterior), decodes and compares spectra."""

    def __init__(self, vae: OobleckVAE, cfg: AEConfig) -> None:
        self.vae, self.cfg = vae, cfg
        for p in vae.parameters():
            p.requires_grad_(True)
        vae.train()
        self.opt = torch.optim.Adam(vae.parameters(), lr=cfg.lr, betas=(0.8, 0.99))
        self.step = 0
        self.history: list[dict] = []

    def train_step(self, audio: Tensor) -> dict:
        """audio: (B, ch, n) with n a multiple of the VAE's hop."""
        gen = torch.Generator().manual_seed(self.cfg.seed * 1_000_003 + self.step)
        h = self.vae.encoder(audio)
        mean, std = self.vae.bottleneck.posterior(h)
        z = mean + std * torch.randn(mean.shape, generator=gen).to(mean)
        recon = self.vae.decoder(z)[..., : audio.shape[-1]]
        rec = multires_stft_loss(recon, audio, self.cfg.ffts)
        kl = self.vae.bottleneck.kl(mean, std)
        loss = rec + self.cfg.kl_weight * kl
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.vae.parameters(), self.cfg.grad_clip)
        self.opt.step()
        self.step += 1
        out = {"loss": float(loss.detach()), "stft": float(rec.detach()), "kl": float(kl.detach())}
        self.history.append(out)
        return out

    @torch.no_grad()
    def evaluate(self, audio: Tensor) -> dict:
        """Held-out reconstruction from the posterior mean: STFT distance and SI-SDR (dB)."""
        self.vae.eval()
        try:
            recon = self.vae.decode(self.vae.encode(audio))[..., : audio.shape[-1]]
            return {
                "stft_distance": float(multires_stft_loss(recon, audio, self.cfg.ffts)),
                "si_sdr_db": float(si_sdr(recon, audio).mean()),
            }
        finally:
            self.vae.train()
