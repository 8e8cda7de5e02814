"""Autoencoder training: a small Oobleck VAE fitted with a multi-resolution STFT loss and a KL term.

The same `OobleckVAE` the streams decode with (SAOS's architecture, smaller config). Reconstruction is
reported as a multi-resolution STFT distance and SI-SDR, so numbers are comparable across runs.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import soundfile as sf
import torch
import torch.nn.functional as F
from torch import Tensor

from ..model.checkpoint import (
    load_checkpoint,
    load_optimizer,
    save_checkpoint,
    save_optimizer,
    write_json_atomic,
)
from ..model.oobleck import OobleckConfig, OobleckVAE
from .distributed import Rows, World, data_parallel, global_sum


def _stft_mag(x: Tensor, n_fft: int) -> Tensor:
    window = torch.hann_window(n_fft, device=x.device, dtype=x.dtype)
    spec = torch.stft(
        x.reshape(-1, x.shape[-1]), n_fft, hop_length=n_fft // 4, window=window, return_complex=True
    )
    return spec.abs().clamp(min=1e-7)


def multires_stft_loss(
    pred: Tensor,
    target: Tensor,
    ffts: tuple[int, ...] = (2048, 512, 128),
    across: Callable[[Tensor], Tensor] | None = None,
) -> Tensor:
    """Spectral convergence + log-magnitude L1, averaged over resolutions (audio (B, ch, n)).

    The spectral convergence is a ratio of norms over the whole batch, not a mean over its rows: when these
    rows are one process's share, `across` (`global_sum`) sums its sums of squares over the processes."""
    across = across or (lambda x: x)
    total = pred.new_zeros(())
    for n_fft in ffts:
        p, t = _stft_mag(pred, n_fft), _stft_mag(target, n_fft)
        err, ref = across((t - p).square().sum()), across(t.square().sum())
        sc = err.sqrt() / ref.sqrt().clamp(min=1e-7)
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
    # freeze the encoder and bottleneck: the latent space (and every model trained on it) stays valid
    decoder_only: bool = False


class AETrainer:
    """Adam on the VAE (or its decoder alone); each step encodes (sampling the posterior), decodes and
    compares spectra.

    With a `world` of several processes (under torchrun) each step is data-parallel: the posterior noise is
    drawn for the whole batch, each process computes its rows and DistributedDataParallel averages the
    gradients; the VAE must already be on the world's device."""

    def __init__(self, vae: OobleckVAE, cfg: AEConfig, world: World | None = None) -> None:
        self.vae, self.cfg = vae, cfg
        self.world = world or World()
        self.rows = self.world.rows(cfg.batch)
        vae.requires_grad_(not cfg.decoder_only)
        vae.decoder.requires_grad_(True)
        vae.train()
        self.params = [p for p in vae.parameters() if p.requires_grad]
        self.opt = torch.optim.Adam(self.params, lr=cfg.lr, betas=(0.8, 0.99))
        self.objective = data_parallel(vae, self._loss, self.world)
        self.step = 0
        self.history: list[dict] = []

    def _loss(self, audio: Tensor, gen: torch.Generator, rows: Rows) -> tuple[Tensor, Tensor, Tensor]:
        with torch.set_grad_enabled(not self.cfg.decoder_only):
            mean, std = self.vae.bottleneck.posterior(self.vae.encoder(audio))
        eps = rows.take(torch.randn((rows.total, *mean.shape[1:]), generator=gen))
        z = mean + std * eps.to(mean)
        recon = self.vae.decoder(z)[..., : audio.shape[-1]]
        rec = multires_stft_loss(recon, audio, self.cfg.ffts, global_sum)
        kl = self.vae.bottleneck.kl(mean, std)
        return rec + self.cfg.kl_weight * kl, rec, kl

    def train_step(self, audio: Tensor, rows: Rows | None = None) -> dict:
        """audio: (B, ch, n) with n a multiple of the VAE's hop; `rows` of a larger batch when it is this
        process's share (`self.rows`, cut by `AudioClips.batch(..., rows=...)`)."""
        gen = torch.Generator().manual_seed(self.cfg.seed * 1_000_003 + self.step)
        p = next(self.vae.parameters())
        loss, rec, kl = self.objective(audio.to(p.device), gen, rows or Rows.all(audio.shape[0]))
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.params, self.cfg.grad_clip)
        self.opt.step()
        self.step += 1
        mean = self.world.mean
        out = {"loss": mean(loss), "stft": mean(rec), "kl": mean(kl)}
        self.history.append(out)
        return out

    @torch.no_grad()
    def evaluate(self, audio: Tensor) -> dict:
        """Held-out reconstruction from the posterior mean: STFT distance and SI-SDR (dB)."""
        self.vae.eval()
        try:
            audio = audio.to(next(self.vae.parameters()).device)
            recon = self.vae.decode(self.vae.encode(audio))[..., : audio.shape[-1]]
            return {
                "stft_distance": float(multires_stft_loss(recon, audio, self.cfg.ffts)),
                "si_sdr_db": float(si_sdr(recon, audio).mean()),
            }
        finally:
            self.vae.train()


# --- data, checkpoints, latent scale -------------------------------------------------------------------


class AudioClips:
    """The mixes of a dataset split, cropped at random: held in memory as one float32 array each, or with
    `lazy` read crop by crop from their files (a data-parallel process then reads only its rows' crops)."""

    def __init__(self, data: str | Path, splits: tuple[str, ...] = ("train",), lazy: bool = False) -> None:
        from .dataset import load_index

        index = load_index(data)
        self.sample_rate, self.hop = index["sample_rate"], index["hop"]
        self.paths = [
            Path(data) / "audio" / f"{e['id']}.wav" for e in index["examples"] if e["split"] in splits
        ]
        if not self.paths:
            raise ValueError(f"no {'/'.join(splits)} examples in {data}")
        self.clips = None if lazy else [torch.from_numpy(sf.read(p, dtype="float32")[0]) for p in self.paths]
        self.lengths = [sf.info(p).frames for p in self.paths] if lazy else [len(x) for x in self.clips]

    def _crop(self, i: int, start: int, length: int) -> Tensor:
        if self.clips is not None:
            return self.clips[i][start : start + length]
        audio, _ = sf.read(self.paths[i], start=start, stop=start + length, dtype="float32")
        return torch.from_numpy(audio)

    def batch(self, n: int, length: int, gen: torch.Generator, rows: list[int] | None = None) -> Tensor:
        """n random crops; with `rows`, only those of the n drawn (every crop is drawn, so a row is the same
        whichever process reads it)."""
        drawn = []
        for _ in range(n):
            i = int(torch.randint(len(self.lengths), (1,), generator=gen))
            drawn.append((i, int(torch.randint(max(self.lengths[i] - length, 0) + 1, (1,), generator=gen))))
        rows = list(range(n)) if rows is None else rows
        out = torch.empty(len(rows), 1, length)
        for b, r in enumerate(rows):
            crop = self._crop(*drawn[r], length)
            out[b, 0] = F.pad(crop, (0, length - len(crop)))
        return out


def save_ae(trainer: AETrainer, out: str | Path, extra: dict | None = None) -> None:
    """`vae.safetensors` (weights + config), optimizer state and a JSON progress file."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    save_checkpoint(out / "vae.safetensors", trainer.vae.state_dict(), {"vae": trainer.vae.cfg.to_dict()})
    meta = save_optimizer(trainer.opt, out / "optimizer.safetensors")
    progress = {
        "step": trainer.step,
        "history": trainer.history,
        "config": asdict(trainer.cfg),
        "optimizer": meta,
        **(extra or {}),
    }
    write_json_atomic(out / "progress.json", progress)


def load_vae(path: str | Path) -> OobleckVAE:
    """The VAE of `train ae`'s vae.safetensors, or the one inside an LMDM file (to encode more data for it)."""
    sd, config = load_checkpoint(path)
    if "vae" not in config:
        raise ValueError(f"{Path(path).name} has no VAE config")
    if "dit" in config:
        from ..model.bundle import LMDMModel

        return LMDMModel.load(path).vae.requires_grad_(True)
    vae = OobleckVAE(OobleckConfig.from_dict(config["vae"]))
    vae.load_state_dict(sd, strict=True)
    return vae


def resume_ae(out: str | Path, vae: OobleckVAE | None = None, world: World | None = None) -> AETrainer:
    """The trainer saved in `out`, on the world's device and any number of processes; `vae` (already holding
    the saved weights, e.g. from an LMDM file, on that device) replaces loading `vae.safetensors`."""
    out = Path(out)
    world = world or World()
    progress = json.loads((out / "progress.json").read_text())
    cfg = progress["config"]
    cfg["ffts"] = tuple(cfg["ffts"])
    trainer = AETrainer(
        vae if vae is not None else load_vae(out / "vae.safetensors").to(world.device), AEConfig(**cfg), world
    )
    # runs saved before the progress file carried the optimizer's metadata: fresh param groups, saved tensors
    fresh = {"param_groups": trainer.opt.state_dict()["param_groups"], "state": {}}
    load_optimizer(trainer.opt, out / "optimizer.safetensors", progress.get("optimizer", fresh))
    trainer.step, trainer.history = progress["step"], list(progress["history"])
    return trainer


@torch.no_grad()
def rescale_latents(vae: OobleckVAE, sigma: float) -> None:
    """Make the VAE's latents 1/sigma as large (encoder mean rows and decoder input both rescaled), so the
    diffusion model sees roughly unit-variance latents while audio in = audio out is unchanged."""
    ld = vae.cfg.latent_dim
    last = vae.encoder.layers[-1]
    first = vae.decoder.layers[0]
    for conv, rows, f in ((last, slice(0, ld), 1.0 / sigma), (first, slice(None), sigma)):
        if conv.folded:
            if rows == slice(None):
                conv.weight.mul_(f)
            else:
                conv.weight[rows].mul_(f)
        else:
            conv.weight_g[rows].mul_(f)
        if conv.bias is not None and rows != slice(None):
            conv.bias[rows].mul_(f)
