"""Fréchet distance between embedding sets, and the metrics of one window of generated audio."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
from scipy import linalg

FD_EPS = 1e-6


def frechet_distance(a: np.ndarray, b: np.ndarray, eps: float = FD_EPS) -> float:
    """Fréchet distance between Gaussians fitted to two (n, d) embedding sets.

    |mu_a - mu_b|^2 + tr(S_a + S_b - 2 (S_a S_b)^1/2). With fewer vectors than dimensions a covariance
    is singular and the matrix square root of the product is ill-conditioned, so `eps * I` (scaled by the
    mean variance of the two sets, so it means the same at any embedding scale) is added to both
    covariances. A set of one vector has zero covariance. Tiny negative results from round-off are 0.
    """
    a, b = np.atleast_2d(np.asarray(a, np.float64)), np.atleast_2d(np.asarray(b, np.float64))
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"embedding sizes differ: {a.shape[1]} vs {b.shape[1]}")
    if len(a) == 0 or len(b) == 0:
        raise ValueError("both embedding sets need at least one vector")
    d = a.shape[1]

    def cov(x: np.ndarray) -> np.ndarray:
        return np.cov(x, rowvar=False).reshape(d, d) if len(x) > 1 else np.zeros((d, d))

    mu_a, mu_b, s_a, s_b = a.mean(0), b.mean(0), cov(a), cov(b)
    scale = max((np.trace(s_a) + np.trace(s_b)) / (2 * d), 1e-12)
    reg = eps * scale * np.eye(d)
    s_a, s_b = s_a + reg, s_b + reg
    covmean = linalg.sqrtm(s_a @ s_b)
    if not np.isfinite(covmean).all():
        covmean = linalg.sqrtm((s_a + reg * 1e3) @ (s_b + reg * 1e3))
    covmean = np.real(covmean)
    fd = float(np.sum((mu_a - mu_b) ** 2) + np.trace(s_a) + np.trace(s_b) - 2.0 * np.trace(covmean))
    return max(fd, 0.0)


@dataclass
class WindowMetrics:
    """What one window of one generated stream scored against its prompt."""

    start: float  # seconds into the stream
    end: float
    adherence: float  # mean correctness over the single-choice heads the prompt has labels for
    heads: dict[str, float] = field(default_factory=dict)  # per head: 1 correct, 0 wrong
    adherence_soft: float = float("nan")  # mean probability given to the prompt's classes
    families_f1: float = float("nan")  # multi-label F1 of the instrument families, when labelled
    bpm: float = float("nan")  # estimated
    tempo_error: float = float("nan")  # relative, against the requested bpm
    tempo_error_octave: float = float("nan")  # the same with octave errors folded away

    def to_dict(self) -> dict:
        return {k: _json_float(v) for k, v in asdict(self).items()}


def _json_float(v):
    if isinstance(v, dict):
        return {k: _json_float(x) for k, x in v.items()}
    if isinstance(v, float):
        return None if not np.isfinite(v) else round(v, 6)
    return v


def nanmean(values) -> float:
    """Mean of the finite values; NaN when there are none (no RuntimeWarning)."""
    v = np.asarray([x for x in values if x is not None], dtype=np.float64)
    v = v[np.isfinite(v)]
    return float(v.mean()) if len(v) else float("nan")


def share_within(errors, tol: float = 0.05) -> float:
    """The share of windows whose relative tempo error is within `tol`. A window with no estimate (no beat
    found) counts as a miss: a stream asked for a tempo that shows none has not kept it. NaN when empty."""
    v = np.asarray([np.nan if x is None else x for x in errors], dtype=np.float64)
    return float(np.mean(np.isfinite(v) & (v <= tol))) if len(v) else float("nan")


def nanmedian(values) -> float:
    """Median of the finite values; NaN when there are none."""
    v = np.asarray([x for x in values if x is not None], dtype=np.float64)
    v = v[np.isfinite(v)]
    return float(np.median(v)) if len(v) else float("nan")
