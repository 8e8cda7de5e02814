"""Block seams: how much more the spectrum jumps where one generated block meets the next than elsewhere.

A block-wise generator whose blocks do not continue each other puts a jump in the spectrum at every seam,
and a tempo estimator then hears the block rate as the beat. Real music has no seams: laid on the same
block grid, its flux is the same at every phase of the grid, so its ratio is about 1. A ratio well above
the real music's says the model's blocks are heard as blocks.
"""

from __future__ import annotations

import numpy as np
import torch

from ..dsp.features import MelConfig, log_mel

PHASES = 16  # flux frames per block
SKIP_BLOCKS = 2  # the stream's start (out of silence) is left out


def seam_profile(
    audio: np.ndarray, sample_rate: int, block_seconds: float, phases: int = PHASES
) -> np.ndarray:
    """Mean flux by phase of the block grid, (phases,): entry p is the flux into the frames centred p/phases
    of a block after a seam. Flux here is the mean absolute change of the log-mel bands from one frame to the
    next (a seam may as well drop as rise). Frames are `phases` a block, each spanning two hops, so a seam
    shows in the flux of phases 0 and 1 (the frame that straddles it, and the first one wholly after it)."""
    hop = max(1, round(block_seconds * sample_rate / phases))
    cfg = MelConfig(sample_rate=sample_rate, n_fft=2 * hop, hop=hop, n_mels=40)
    x = np.asarray(audio, dtype=np.float32)
    if x.ndim > 1:
        x = x.reshape(-1, x.shape[-1]).mean(0)
    db = log_mel(torch.from_numpy(x), cfg)
    flux = (db[:, 1:] - db[:, :-1]).abs().mean(0).double().numpy()  # flux[i]: into frame i + 1
    centre = np.arange(1, len(flux) + 1) * hop / sample_rate
    keep = centre >= SKIP_BLOCKS * block_seconds
    phase = np.floor((centre[keep] / block_seconds % 1.0) * phases + 1e-6).astype(int) % phases
    sums = np.bincount(phase, weights=flux[keep], minlength=phases)
    counts = np.bincount(phase, minlength=phases)
    with np.errstate(invalid="ignore", divide="ignore"):
        return sums / counts


def seam_ratio(audio: np.ndarray, sample_rate: int, block_seconds: float, phases: int = PHASES) -> float:
    """Flux at the seam phases (0 and 1) over the flux at the phases away from them (3 .. phases - 2; the
    neighbours either side are left out). NaN when the audio is too short or silent."""
    if phases < 6:
        raise ValueError(f"phases must be >= 6, got {phases}")
    profile = seam_profile(audio, sample_rate, block_seconds, phases)
    away = float(np.nanmean(profile[3:-1])) if np.isfinite(profile[3:-1]).any() else float("nan")
    at = float(np.nanmean(profile[:2])) if np.isfinite(profile[:2]).any() else float("nan")
    if not np.isfinite(away) or away <= 0:
        return float("nan")
    return at / away
