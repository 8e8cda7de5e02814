"""Reading a rendered training-data directory (`lmdm-live train data`): its index and its mixes."""

from __future__ import annotations

import json
from math import gcd
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy.signal import resample_poly

SPLITS = ("train", "valid", "test")


def load_index(data_dir: str | Path) -> dict:
    """`DIR/index.json`, checked for its format, with `examples` as a list."""
    path = Path(data_dir) / "index.json"
    if not path.is_file():
        raise FileNotFoundError(f"no index.json in {data_dir} (make one with `lmdm-live train data`)")
    index = json.loads(path.read_text())
    if index.get("format") != "lmdm-dataset":
        raise ValueError(f"{path} is not an lmdm-dataset index (format {index.get('format')!r})")
    if int(index.get("version", 0)) != 1:
        raise ValueError(f"{path}: dataset version {index.get('version')} is not supported (only 1)")
    for ex in index.get("examples", []):
        if ex.get("split") not in SPLITS:
            raise ValueError(f"{path}: example {ex.get('id')!r} has split {ex.get('split')!r}")
    return index


def split(index: dict, name: str) -> list[dict]:
    if name not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {name!r}")
    return [ex for ex in index["examples"] if ex["split"] == name]


def resample(audio: np.ndarray, rate: int, to: int) -> np.ndarray:
    """Polyphase resampling along the last axis (exact ratio)."""
    if rate == to:
        return np.asarray(audio, np.float32)
    g = gcd(int(rate), int(to))
    return resample_poly(audio, to // g, rate // g, axis=-1).astype(np.float32)


def to_mono(audio: np.ndarray) -> np.ndarray:
    """(samples,), (channels, samples) -> (samples,) float32."""
    a = np.asarray(audio, np.float32)
    if a.ndim == 1:
        return a
    rows = int(np.prod(a.shape[:-1]))  # not -1: a block inside the decoder's latency has no samples
    return a.reshape(rows, a.shape[-1]).mean(0)


def read_mono(path: str | Path, sample_rate: int) -> np.ndarray:
    """A sound file as mono float32 at `sample_rate`."""
    audio, rate = sf.read(str(path), dtype="float32", always_2d=True)
    return resample(audio.mean(1), rate, sample_rate)


def read_mix(data_dir: str | Path, example: dict, sample_rate: int) -> np.ndarray:
    """An example's mono mix at `sample_rate`, float32."""
    path = Path(data_dir) / "audio" / f"{example['id']}.wav"
    if not path.is_file():
        raise FileNotFoundError(f"missing audio for example {example['id']}: {path}")
    return read_mono(path, sample_rate)


class CodecRoundTrip:
    """Audio through an LMDM file's autoencoder and back (posterior mean), at the caller's rate.

    What any generated audio has been through: the classifier can learn from it to judge the music rather
    than the codec, and the test split through it is the adherence ceiling a generator on that codec has.
    """

    def __init__(self, model) -> None:
        """`model`: an LMDM or codec file's path, an `LMDMModel` already loaded, or a codec."""
        if isinstance(model, str | Path):
            from ..model.bundle import load_codec

            self.codec = load_codec(model)
        else:
            self.codec = model.codec if hasattr(model, "codec") else model
        self.rate = self.codec.sample_rate

    def __call__(self, audio: np.ndarray, sample_rate: int) -> np.ndarray:
        import torch

        x = resample(to_mono(audio), sample_rate, self.rate)
        with torch.no_grad():
            y = (
                self.codec.decode(self.codec.encode(torch.from_numpy(x)[None, None]))[0]
                .float()
                .mean(0)
                .numpy()
            )
        y = resample(y[: len(x)], self.rate, sample_rate)
        return np.pad(y, (0, max(0, len(audio) - len(y))))[: len(audio)]
