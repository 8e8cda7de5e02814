"""What an autoencoder keeps of the two things the instrument is asked to follow: pitch and tempo.

The test split's lead stems and mixes are read clean and after a round trip through an LMDM file's
autoencoder, by the same readers the acceptance tests and the evaluation use (swift-f0 through
`sketch.control_curves`; `tempo.estimate_bpm`). A generator decoded by that autoencoder cannot show more
than the round trip keeps, so this is the ceiling of the sketch and tempo bars for a model on that codec.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..sketch import Controls, SketchConfig, control_curves
from .data import CodecRoundTrip, load_index, read_mix, read_mono, split
from .metrics import nanmean, nanmedian, share_within
from .tempo import estimate_bpm, tempo_error


def kept_frames(clean: Controls, other: Controls) -> tuple[int, int]:
    """(frames `other` voices within a semitone of `clean`'s pitch, frames `clean` voices)."""
    n = min(len(clean.voiced), len(other.voiced))
    voiced = clean.voiced[:n] > 0.5
    same = voiced & (other.voiced[:n] > 0.5) & (np.abs(other.pitch_midi[:n] - clean.pitch_midi[:n]) < 1.0)
    return int(same.sum()), int(voiced.sum())


def codec_report(
    model_path: str | Path,
    data_dir: str | Path,
    split_name: str = "test",
    max_examples: int | None = None,
    window: float = 10.0,
) -> dict:
    """Voicing and pitch of the lead stems, and tempo of the mixes (per `window` s), clean and through the
    codec. `pitch_r` pools the frames voiced in both over every example; `pitch_kept` is the share of the
    clean voiced frames that come through voiced and within a semitone."""
    data_dir = Path(data_dir)
    codec = CodecRoundTrip(model_path)
    rate = codec.rate
    cfg = SketchConfig(sample_rate=rate, hop=512)
    examples = split(load_index(data_dir), split_name)[:max_examples]
    if not examples:
        raise ValueError(f"{data_dir}: no {split_name} examples")
    voiced_clean, voiced_codec, pitch_clean, pitch_codec = [], [], [], []
    clean_frames = close = 0
    tempo_clean, tempo_codec = [], []
    for ex in examples:
        mix = read_mix(data_dir, ex, rate)
        bpm = ex.get("labels", {}).get("bpm")
        if bpm:
            n = int(window * rate)
            through = codec(mix, rate)
            for s in range(0, max(len(mix) - n, 0) + 1, n):
                tempo_clean.append(tempo_error(estimate_bpm(mix[s : s + n], rate), bpm))
                tempo_codec.append(tempo_error(estimate_bpm(through[s : s + n], rate), bpm))
        lead_path = data_dir / "stems" / ex["id"] / "lead.wav"
        if not lead_path.is_file():
            continue
        lead = read_mono(lead_path, rate)
        a, b = control_curves(lead, cfg), control_curves(codec(lead, rate), cfg)
        voiced_clean.append(float(a.voiced.mean()))
        voiced_codec.append(float(b.voiced.mean()))
        both = (a.voiced > 0.5) & (b.voiced > 0.5)
        pitch_clean.extend(a.pitch_midi[both].tolist())
        pitch_codec.extend(b.pitch_midi[both].tolist())
        kept, voiced = kept_frames(a, b)
        close, clean_frames = close + kept, clean_frames + voiced
    r = float(np.corrcoef(pitch_clean, pitch_codec)[0, 1]) if len(pitch_clean) > 2 else float("nan")
    return {
        "model": str(model_path),
        "data": str(data_dir),
        "split": split_name,
        "examples": len(examples),
        "lead": {
            "stems": len(voiced_clean),
            "voiced_clean": nanmean(voiced_clean),
            "voiced_codec": nanmean(voiced_codec),
            "frames_voiced_in_both": len(pitch_clean),
            "pitch_r": r,
            # of the frames voiced clean, the share voiced through the codec within a semitone
            "pitch_kept": close / clean_frames if clean_frames else float("nan"),
        },
        "tempo": {
            "windows": len(tempo_clean),
            "median_error_clean": nanmedian(tempo_clean),
            "median_error_codec": nanmedian(tempo_codec),
            "within_5pct_clean": share_within(tempo_clean),
            "within_5pct_codec": share_within(tempo_codec),
        },
    }
