"""The judge: a small CNN over log-mel crops that names a clip's style, tempo bucket, mode and instruments.

It is trained on random 2-10 s crops so it can judge short windows of a stream, and only on the dataset's
held-out renders ("valid"; "test" measures it): were it trained on the generator's own "train" split it
would reward memorised training audio. Besides its heads it gives an embedding (the layer before them) for
Fréchet distances. A periodicity branch (the autocorrelation of the crop's spectral flux) lets it hear
tempo, which pooled convolution features alone barely see.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import Tensor, nn

from ..dsp.features import ChromaConfig, MelConfig, chroma, log_mel
from ..model.checkpoint import (
    load_checkpoint_config,
    load_optimizer,
    save_checkpoint,
    save_optimizer,
    write_json_atomic,
)
from ..train.labels import FAMILIES, HEADS, head_targets
from .data import load_index, read_mix, split

CLASSIFIER_FORMAT = "lmdm-eval-classifier"
MODEL_FILE = "classifier.safetensors"


@dataclass
class ClassifierConfig:
    sample_rate: int = 16000
    n_fft: int = 2048
    hop: int = 256
    n_mels: int = 128
    channels: tuple[int, ...] = (16, 32, 64, 96)
    embed_dim: int = 128
    tempo_lags: tuple[int, int] = (16, 96)  # flux-autocorrelation lags in frames: 234..39 bpm at hop 256
    chroma_channels: int = 32  # width of the pitch-class branch (0: none, as in version-1 checkpoints)
    pool: str = "attention"  # how conv features are pooled over time: "attention" (+ mean) or "meanmax"
    dropout: float = 0.2
    crop_min: float = 2.0  # seconds
    crop_max: float = 10.0
    batch: int = 16
    lr: float = 2e-3
    weight_decay: float = 1e-4
    balance: bool = True  # sample training clips so every lead family is drawn about equally often
    seed: int = 0

    def __post_init__(self) -> None:
        self.channels = tuple(int(c) for c in self.channels)
        self.tempo_lags = (int(self.tempo_lags[0]), int(self.tempo_lags[1]))
        if not 0 < self.crop_min <= self.crop_max:
            raise ValueError(f"need 0 < crop_min <= crop_max, got {self.crop_min}, {self.crop_max}")
        if self.n_mels % 2 ** len(self.channels):
            raise ValueError(f"n_mels ({self.n_mels}) must divide by 2^{len(self.channels)}")
        if self.pool not in ("attention", "meanmax"):
            raise ValueError(f"pool must be 'attention' or 'meanmax', got {self.pool!r}")

    @property
    def mel(self) -> MelConfig:
        return MelConfig(self.sample_rate, self.n_fft, self.hop, self.n_mels)

    @property
    def chroma(self) -> ChromaConfig:
        return ChromaConfig(self.sample_rate, hop=self.hop)

    def features(self, audio) -> tuple[Tensor, Tensor | None]:
        """(..., samples) audio -> log-mel (..., n_mels, T) and chroma (..., 2, 12, T) (None without the
        pitch-class branch); both have one frame per hop."""
        return log_mel(audio, self.mel), (chroma(audio, self.chroma) if self.chroma_channels else None)

    def frames(self, seconds: float) -> int:
        return max(1, int(round(seconds * self.sample_rate / self.hop)))


def flux_autocorrelation(x: Tensor, lags: tuple[int, int]) -> Tensor:
    """(B, mels, T) normalised log-mel -> (B, hi - lo) autocorrelation of its spectral flux at lags lo..hi-1,
    each lag divided by its overlap so short crops are not biased toward short lags."""
    flux = torch.relu(x[..., 1:] - x[..., :-1]).mean(1)
    flux = flux - flux.mean(-1, keepdim=True)
    n = flux.shape[-1]
    spec = torch.fft.rfft(flux, 2 * n)
    ac = torch.fft.irfft(spec * spec.conj(), 2 * n)[..., :n]
    ac = ac / ac[..., :1].clamp_min(1e-8)
    lo, hi = lags
    out = torch.zeros(x.shape[0], hi - lo, device=x.device, dtype=x.dtype)
    k = max(0, min(hi, n) - lo)
    if k:
        overlap = (n - torch.arange(lo, lo + k, device=x.device, dtype=x.dtype)) / n
        out[:, :k] = ac[:, lo : lo + k] / overlap
    return out


def _circular_conv(x: Tensor, conv: nn.Module) -> Tensor:
    """A kernel-12 convolution over the pitch-class axis (dim -2 of (B, C, 12, T), or -1 of (B, C, 12)),
    wrapped around so it sees every interval from every pitch class alike."""
    if x.dim() == 4:
        return conv(F.pad(x, (0, 0, 6, 5), mode="circular"))
    return conv(F.pad(x, (6, 5), mode="circular"))


class ChromaBranch(nn.Module):
    """Transposition-invariant pitch-class features, for the mode (and the embedding).

    A circular kernel-12 convolution per frame (chord shapes from each candidate root), averaged over time,
    a second circular one over those (a key profile from each candidate tonic), then max and mean over the
    12 rotations: the same output for the same music in any key.
    """

    def __init__(self, bands: int, width: int) -> None:
        super().__init__()
        self.frame = nn.Conv2d(bands, width, (12, 1))
        self.key = nn.Conv1d(2 * width, width, 12)
        self.out_dim = 2 * width

    def forward(self, c: Tensor) -> Tensor:
        h = torch.relu(_circular_conv(c, self.frame))  # (B, width, 12, T)
        h = torch.cat([h.mean(-1), h.amax(-1)], dim=1)  # (B, 2 width, 12)
        h = torch.relu(_circular_conv(h, self.key))  # (B, width, 12)
        return torch.cat([h.amax(-1), h.mean(-1)], dim=1)


class LabelNet(nn.Module):
    """Conv blocks (3x3 conv, batch norm, ReLU, 2x2 max-pool) over the log-mel -> pooled over time
    (attention and mean, or mean and max), plus the periodicity branch and the pitch-class branch ->
    embedding -> one linear head per label; the mode head also sees the pitch-class features directly."""

    def __init__(self, cfg: ClassifierConfig) -> None:
        super().__init__()
        self.cfg = cfg
        layers: list[nn.Module] = []
        c_in = 1
        for c in cfg.channels:
            layers += [nn.Conv2d(c_in, c, 3, padding=1), nn.BatchNorm2d(c), nn.ReLU(), nn.MaxPool2d(2)]
            c_in = c
        self.conv = nn.Sequential(*layers)
        feat = c_in * (cfg.n_mels // 2 ** len(cfg.channels))
        self.attn = nn.Conv1d(feat, 1, 1) if cfg.pool == "attention" else None
        n_lags = cfg.tempo_lags[1] - cfg.tempo_lags[0]
        self.tempo = nn.Sequential(nn.Linear(n_lags, 64), nn.ReLU())
        bands = len(ChromaConfig().bands) - 1
        self.pitch = ChromaBranch(bands, cfg.chroma_channels) if cfg.chroma_channels else None
        n_pitch = self.pitch.out_dim if self.pitch is not None else 0
        self.embed = nn.Sequential(nn.Linear(2 * feat + 64 + n_pitch, cfg.embed_dim), nn.ReLU())
        self.drop = nn.Dropout(cfg.dropout)
        self.heads = nn.ModuleDict({name: nn.Linear(cfg.embed_dim, len(v)) for name, v in HEADS.items()})
        self.heads["families"] = nn.Linear(cfg.embed_dim, len(FAMILIES))
        if self.pitch is not None:
            self.heads["mode"] = nn.Linear(cfg.embed_dim + n_pitch, len(HEADS["mode"]))

    def _features(self, mel_db: Tensor, chroma_: Tensor | None) -> tuple[Tensor, Tensor | None]:
        """(B, mels, T) log-mel in dB (+ (B, 2, 12, T) chroma) -> (B, embed_dim) embedding and the
        pitch-class features. Each crop's log-mel is standardised: loudness is not a label."""
        x = mel_db - mel_db.mean(dim=(-2, -1), keepdim=True)
        x = x / x.std(dim=(-2, -1), keepdim=True).clamp_min(1e-3)
        if x.shape[-1] < 2 ** len(self.cfg.channels):  # shorter than the pooling: pad with the mean
            x = F.pad(x, (0, 2 ** len(self.cfg.channels) - x.shape[-1]))
        h = self.conv(x[:, None]).flatten(1, 2)  # (B, feat, T')
        if self.attn is not None:
            w = self.attn(h).softmax(-1)
            pooled = torch.cat([(h * w).sum(-1), h.mean(-1)], dim=1)
        else:
            pooled = torch.cat([h.mean(-1), h.amax(-1)], dim=1)
        parts = [pooled, self.tempo(flux_autocorrelation(x, self.cfg.tempo_lags))]
        pitch = None
        if self.pitch is not None:
            if chroma_ is None:
                raise ValueError("this classifier needs chroma beside the log-mel")
            pitch = self.pitch(chroma_)
            parts.append(pitch)
        return self.embed(torch.cat(parts, dim=1)), pitch

    def embedding(self, mel_db: Tensor, chroma_: Tensor | None = None) -> Tensor:
        return self._features(mel_db, chroma_)[0]

    def forward(self, mel_db: Tensor, chroma_: Tensor | None = None) -> tuple[dict[str, Tensor], Tensor]:
        e, pitch = self._features(mel_db, chroma_)
        h = self.drop(e)
        out = {}
        for name, head in self.heads.items():
            out[name] = head(
                torch.cat([h, self.drop(pitch)], 1) if name == "mode" and pitch is not None else h
            )
        return out, e


# --- training data --------------------------------------------------------------------------------------


@dataclass
class MelBank:
    """Whole-clip log-mels (and chroma) of one split and their targets; crops are slices of these."""

    mels: list[Tensor]
    targets: dict[str, Tensor]  # head -> (N,) class index, -100 where unlabelled; families -> (N, 12)
    families_mask: Tensor  # (N,) 1 where the families are labelled
    ids: list[str] = field(default_factory=list)
    chromas: list[Tensor] | None = None  # (2, 12, T) per clip, frame-aligned with mels

    @classmethod
    def from_dataset(
        cls, data_dir: str | Path, split_name: str, cfg: ClassifierConfig, codec=None
    ) -> MelBank:
        """`codec` (audio, rate) -> audio, e.g. `CodecRoundTrip`: each clip is also held as it sounds
        through it (same labels, id + "~codec")."""
        index = load_index(data_dir)
        examples = split(index, split_name)
        if not examples:
            raise ValueError(f"{data_dir}: the {split_name!r} split is empty")
        audio = [read_mix(data_dir, ex, cfg.sample_rate) for ex in examples]
        labels, ids = [ex.get("labels", {}) for ex in examples], [ex["id"] for ex in examples]
        if codec is not None:
            audio += [codec(a, cfg.sample_rate) for a in audio]
            labels, ids = labels * 2, ids + [i + "~codec" for i in ids]
        feats = [cfg.features(a) for a in audio]
        mels = [m for m, _ in feats]
        chromas = [c for _, c in feats] if cfg.chroma_channels else None
        return cls.from_labels(mels, labels, ids, chromas)

    @classmethod
    def from_labels(
        cls, mels: list[Tensor], labels: list[dict], ids: list[str], chromas: list[Tensor] | None = None
    ) -> MelBank:
        targets = {name: torch.full((len(labels),), -100, dtype=torch.long) for name in HEADS}
        fam = torch.zeros(len(labels), len(FAMILIES))
        mask = torch.zeros(len(labels))
        for i, lab in enumerate(labels):
            for head, value in head_targets(lab).items():
                targets[head][i] = HEADS[head].index(value)
            if lab.get("families") is not None:
                mask[i] = 1.0
                for f in lab["families"]:
                    if f not in FAMILIES:
                        raise ValueError(f"unknown family {f!r}; known: {', '.join(FAMILIES)}")
                    fam[i, FAMILIES.index(f)] = 1.0
        targets["families"] = fam
        return cls(mels, targets, mask, ids, chromas)

    def lead_balanced(self) -> np.ndarray:
        """Sampling probabilities that draw every labelled lead family equally often (unlabelled clips
        get the mean weight)."""
        lead = self.targets["lead"].numpy()
        w = np.ones(len(lead))
        known = lead >= 0
        if known.any():
            counts = np.bincount(lead[known], minlength=len(FAMILIES))
            w[known] = 1.0 / counts[lead[known]]
            w[~known] = w[known].mean()
        return w / w.sum()

    def batch(
        self, rng: np.random.Generator, n: int, frames: int, p: np.ndarray | None = None
    ) -> tuple[tuple[Tensor, Tensor | None], dict[str, Tensor], Tensor]:
        """`n` random crops of `frames` frames (a shorter clip gives all of itself, edge-padded), clips
        drawn uniformly or with probabilities `p`: ((log-mels, chroma or None), targets, families mask)."""
        idx = rng.integers(0, len(self.mels), n) if p is None else rng.choice(len(self.mels), n, p=p)
        crops, chroma_crops = [], []
        for i in idx:
            m = self.mels[i]
            c = self.chromas[i] if self.chromas is not None else None
            if m.shape[-1] <= frames:
                crops.append(F.pad(m, (0, frames - m.shape[-1]), mode="replicate"))
                if c is not None:
                    chroma_crops.append(F.pad(c, (0, frames - c.shape[-1]), mode="replicate"))
            else:
                s = int(rng.integers(0, m.shape[-1] - frames + 1))
                crops.append(m[:, s : s + frames])
                if c is not None:
                    chroma_crops.append(c[..., s : s + frames])
        sel = torch.as_tensor(idx)
        chroma_ = torch.stack(chroma_crops) if chroma_crops else None
        return (
            (torch.stack(crops), chroma_),
            {k: v[sel] for k, v in self.targets.items()},
            self.families_mask[sel],
        )


# --- training -------------------------------------------------------------------------------------------


def _loss(logits: dict[str, Tensor], targets: dict[str, Tensor], fam_mask: Tensor) -> Tensor:
    total = logits["style"].new_zeros(())
    for name in HEADS:
        t = targets[name]
        if (t >= 0).any():
            total = total + F.cross_entropy(logits[name], t, ignore_index=-100)
    if fam_mask.any():
        bce = F.binary_cross_entropy_with_logits(logits["families"], targets["families"], reduction="none")
        total = total + (bce.mean(1) * fam_mask).sum() / fam_mask.sum()
    return total


class ClassifierTrainer:
    """Seeded and resumable: the crops of step k come from (seed, k) alone, so a resumed run continues the
    same sequence of batches an uninterrupted one would have drawn."""

    def __init__(self, cfg: ClassifierConfig) -> None:
        self.cfg = cfg
        torch.manual_seed(cfg.seed)
        self.net = LabelNet(cfg)
        self.opt = torch.optim.AdamW(self.net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.step = 0
        self.history: list[float] = []
        self.codec: str | None = None  # the LMDM file whose autoencoder's sound it also learns (--codec)

    def train_step(self, bank: MelBank) -> float:
        rng = np.random.default_rng([self.cfg.seed, self.step])
        torch.manual_seed(self.cfg.seed * 1_000_003 + self.step)  # dropout
        seconds = float(rng.uniform(self.cfg.crop_min, self.cfg.crop_max))
        p = bank.lead_balanced() if self.cfg.balance else None
        x, targets, fam_mask = bank.batch(rng, self.cfg.batch, self.cfg.frames(seconds), p)
        self.net.train()
        logits, _ = self.net(*x)
        loss = _loss(logits, targets, fam_mask)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        self.step += 1
        value = float(loss.detach())
        self.history.append(value)
        return value

    def classifier(self) -> Classifier:
        return Classifier(self.net, self.cfg)

    # --- checkpoints: weights + config (safetensors + .json), optimizer (safetensors), progress (JSON) ---

    def save(self, out: str | Path) -> None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        self.classifier().save(out, step=self.step)
        meta = save_optimizer(self.opt, out / "optimizer.safetensors")
        progress = {"step": self.step, "history": self.history, "optimizer": meta}
        if self.codec is not None:
            progress["codec"] = self.codec
        write_json_atomic(out / "progress.json", progress)

    @classmethod
    def resume(cls, out: str | Path) -> ClassifierTrainer:
        out = Path(out)
        clf = Classifier.load(out)
        trainer = cls(clf.cfg)
        trainer.net.load_state_dict(clf.net.state_dict())
        progress = json.loads((out / "progress.json").read_text())
        load_optimizer(trainer.opt, out / "optimizer.safetensors", progress["optimizer"])
        trainer.step, trainer.history = progress["step"], list(progress["history"])
        trainer.codec = progress.get("codec")
        return trainer


# --- inference ------------------------------------------------------------------------------------------


@dataclass
class Prediction:
    labels: dict[str, str]  # head -> most likely class
    families: tuple[str, ...]  # families with probability > 0.5
    probs: dict[str, np.ndarray]  # head -> class probabilities (families: independent sigmoids)


class Classifier:
    """A trained LabelNet in eval mode, fed audio at any sample rate."""

    def __init__(
        self, net: LabelNet, cfg: ClassifierConfig, trained: dict[str, list[str]] | None = None
    ) -> None:
        self.net, self.cfg = net, cfg
        # the classes it learnt; one added to labels.py since is never predicted, so it cannot be judged
        self.trained = trained or {**{k: list(v) for k, v in HEADS.items()}, "families": list(FAMILIES)}

    def can_judge(self, labels: dict) -> bool:
        """Whether every single-choice label of a prompt is a class this classifier learnt."""
        return all(v in self.trained.get(k, ()) for k, v in head_targets(labels).items())

    @torch.no_grad()
    def _run(self, windows, sample_rate: int) -> tuple[dict[str, Tensor], Tensor]:
        from .data import resample, to_mono

        if isinstance(windows, np.ndarray) and windows.ndim == 1:
            windows = [windows]
        mono = [resample(to_mono(w), sample_rate, self.cfg.sample_rate) for w in windows]
        n = min(len(w) for w in mono)
        if any(len(w) != n for w in mono):
            raise ValueError("all windows of one call must have the same length")
        self.net.eval()
        logits, emb = self.net(*self.cfg.features(np.stack(mono)))
        return logits, emb

    def predict(self, windows, sample_rate: int) -> list[Prediction]:
        """One prediction per window; `windows` is one mono array or a list/stack of equal-length ones."""
        logits, _ = self._run(windows, sample_rate)
        probs = {
            k: (torch.sigmoid(v) if k == "families" else v.softmax(-1)).numpy() for k, v in logits.items()
        }
        out = []
        for i in range(len(probs["style"])):
            p = {k: v[i] for k, v in probs.items()}
            labels = {k: HEADS[k][int(p[k].argmax())] for k in HEADS}
            fams = tuple(f for f, q in zip(FAMILIES, p["families"]) if q > 0.5)
            out.append(Prediction(labels, fams, p))
        return out

    def embed(self, windows, sample_rate: int) -> np.ndarray:
        """(n, embed_dim) penultimate-layer embeddings, for Fréchet distances."""
        return self._run(windows, sample_rate)[1].numpy()

    def save(self, out: str | Path, step: int = 0) -> None:
        config = {"format": CLASSIFIER_FORMAT, "version": 2, "step": step, "config": asdict(self.cfg)}
        config["vocab"] = {**{k: list(v) for k, v in HEADS.items()}, "families": list(FAMILIES)}
        save_checkpoint(Path(out) / MODEL_FILE, self.net.state_dict(), config)

    @classmethod
    def load(cls, out: str | Path) -> Classifier:
        path = Path(out) / MODEL_FILE
        if not path.is_file():
            raise FileNotFoundError(f"no {MODEL_FILE} in {out} (train one with `lmdm-live eval classifier`)")
        config = load_checkpoint_config(path)
        if config.get("format") != CLASSIFIER_FORMAT:
            raise ValueError(f"{path} is not an evaluation classifier (format {config.get('format')!r})")
        vocab = {**{k: list(v) for k, v in HEADS.items()}, "families": list(FAMILIES)}
        saved = config.get("vocab") or {}
        if saved.keys() != vocab.keys() or any(v[: len(saved[k])] != saved[k] for k, v in vocab.items()):
            raise ValueError(f"{path} was trained on other label vocabularies than labels.py's")
        # version 1 had no pitch-class branch, mean+max pooling and uniform sampling
        legacy = {"chroma_channels": 0, "pool": "meanmax", "balance": False}
        cfg = ClassifierConfig(**{**legacy, **config["config"]})
        net = LabelNet(cfg)
        state = load_file(str(path))
        for head, classes in vocab.items():  # classes added since it was trained: never predicted
            extra = len(classes) - len(saved[head])
            if extra:
                w, b = state[f"heads.{head}.weight"], state[f"heads.{head}.bias"]
                state[f"heads.{head}.weight"] = torch.cat([w, w.new_zeros(extra, w.shape[1])])
                state[f"heads.{head}.bias"] = torch.cat([b, b.new_full((extra,), -1e4)])
        net.load_state_dict(state)
        return cls(net.eval(), cfg, {k: list(v) for k, v in saved.items()})


def adherence(pred: Prediction, labels: dict) -> dict:
    """How well one prediction matches a prompt's labels.

    {"mean": mean correctness over the single-choice heads the labels cover (style, tempo bucket, mode,
    lead), "heads": {head: 1.0 | 0.0}, "soft": mean probability given to the labelled classes,
    "families_f1": F1 of the predicted family set (NaN when the labels name no families)}.
    """
    targets = head_targets(labels)
    heads = {h: float(pred.labels[h] == v) for h, v in targets.items()}
    soft = [float(pred.probs[h][HEADS[h].index(v)]) for h, v in targets.items()]
    f1 = float("nan")
    if labels.get("families"):
        true, got = set(labels["families"]), set(pred.families)
        tp = len(true & got)
        f1 = 2 * tp / (len(true) + len(got)) if true or got else 1.0
    nan = float("nan")
    return {
        "mean": float(np.mean(list(heads.values()))) if heads else nan,
        "heads": heads,
        "soft": float(np.mean(soft)) if soft else nan,
        "families_f1": f1,
    }


def test_report(
    clf: Classifier, data_dir: str | Path, split_name: str = "test", windows=(10.0, 2.0), codec=None
) -> dict:
    """The classifier on real held-out renders: per window length, accuracy per head, families F1 and
    mean adherence (the real-vs-real level a generator is measured against; it should be near 1).
    With `codec`, on the renders as they sound through it: the ceiling for a generator on that codec."""
    examples = split(load_index(data_dir), split_name)
    if not examples:
        raise ValueError(f"{data_dir}: the {split_name!r} split is empty")
    sr = clf.cfg.sample_rate
    audio = [read_mix(data_dir, ex, sr) for ex in examples]
    if codec is not None:
        audio = [codec(a, sr) for a in audio]
    report = {}
    for seconds in windows:
        scores = []
        for ex, a in zip(examples, audio):
            n = min(int(round(seconds * sr)), len(a))
            cuts = np.stack([a[s : s + n] for s in range(0, len(a) - n + 1, n)])
            scores += [adherence(p, ex.get("labels", {})) for p in clf.predict(cuts, sr)]
        heads = {h: float(np.mean([s["heads"][h] for s in scores if h in s["heads"]])) for h in HEADS}
        f1 = [s["families_f1"] for s in scores if np.isfinite(s["families_f1"])]
        report[f"{seconds:g}s"] = {
            "windows": len(scores),
            "accuracy": {h: round(v, 4) for h, v in heads.items() if np.isfinite(v)},
            "families_f1": round(float(np.mean(f1)), 4) if f1 else None,
            "adherence": round(float(np.nanmean([s["mean"] for s in scores])), 4),
        }
    return report
