"""What a codec keeps of what the instrument is asked to follow: pitch, brightness and tempo.

The test split's lead stems and mixes are read clean and after a round trip through a codec (a codec file,
or an LMDM file's), by the same readers the acceptance tests and the evaluation use (swift-f0 through
`sketch.control_curves`; `tempo.estimate_bpm`). A generator decoded by that codec cannot show more than
the round trip keeps, so this is the ceiling of the sketch and tempo bars for a model on that codec.
Beside them: the melody check (known notes from MIDI, `melody.py`), the 95 % energy roll-off, mel and
STFT distances, and what the streaming decoder costs on one core and does at block joins.
"""

from __future__ import annotations

import functools
import time
from pathlib import Path

import numpy as np
import torch

from ..dsp.sketch import Controls, SketchConfig, control_curves
from ..dsp.tempo import estimate_bpm, tempo_error
from .data import CodecRoundTrip, load_index, read_mix, read_mono, split
from .metrics import nanmean, nanmedian, share_within


def kept_frames(clean: Controls, other: Controls) -> tuple[int, int]:
    """(frames `other` voices within a semitone of `clean`'s pitch, frames `clean` voices)."""
    n = min(len(clean.voiced), len(other.voiced))
    voiced = clean.voiced[:n] > 0.5
    same = voiced & (other.voiced[:n] > 0.5) & (np.abs(other.pitch_midi[:n] - clean.pitch_midi[:n]) < 1.0)
    return int(same.sum()), int(voiced.sum())


def rolloff_hz(audio: np.ndarray, sample_rate: int, share: float = 0.95, n_fft: int = 2048) -> float:
    """The frequency below which `share` of the signal's energy lies."""
    n = len(audio) // n_fft * n_fft
    spec = np.abs(np.fft.rfft(audio[:n].reshape(-1, n_fft) * np.hanning(n_fft), axis=1)) ** 2
    cum = np.cumsum(spec.sum(axis=0))
    return float(np.searchsorted(cum, share * cum[-1]) * sample_rate / n_fft)


def _logspec(audio: np.ndarray, n_fft: int) -> np.ndarray:
    hop = n_fft // 4
    n = (len(audio) - n_fft) // hop + 1
    idx = np.arange(n_fft)[None] + hop * np.arange(max(n, 0))[:, None]
    return np.log(np.abs(np.fft.rfft(audio[idx] * np.hanning(n_fft), axis=1)) + 1e-5)


def stft_distance(clean: np.ndarray, other: np.ndarray, ffts: tuple[int, ...] = (512, 2048, 8192)) -> float:
    """Mean log-magnitude L1 over three resolutions (0 for identical audio)."""
    return float(np.mean([np.abs(_logspec(clean, n) - _logspec(other, n)).mean() for n in ffts]))


@functools.cache
def _mel_analysis(sample_rate: int):
    """The codec's 128-band analysis at `sample_rate`, built once (its filterbank is a Python loop)."""
    from ..model.mel import MelAnalysis, MelConfig

    return MelAnalysis(MelConfig(sample_rate=sample_rate))


def mel_distance(clean: np.ndarray, other: np.ndarray, sample_rate: int) -> float:
    """Log-mel L1 on 128 bands at hop 512 (natural log of band power, halved: log-magnitude units)."""
    mel = _mel_analysis(sample_rate)
    with torch.no_grad():
        a = mel.log_mel(torch.from_numpy(clean.astype(np.float32))[None])
        b = mel.log_mel(torch.from_numpy(other.astype(np.float32))[None])
    return float((a - b).abs().mean() * mel.cfg.scale / 2)


def join_click_ratio(audio: np.ndarray, block: int, sample_rate: int) -> float:
    """How much sharper the signal is at block joins than elsewhere: the second difference's energy in 2 ms
    around each join over its median in 2 ms windows anywhere. About 1 means the joins cannot be told
    apart; a click stands far above it."""
    d2 = np.diff(audio, 2) ** 2
    w = max(int(0.002 * sample_rate), 4)
    energy = np.convolve(d2, np.ones(w), mode="same")
    joins = np.arange(block, len(d2) - w, block)
    if not len(joins):
        return float("nan")
    return float(np.median(energy[joins]) / max(np.median(energy), 1e-20))


@torch.no_grad()
def decode_speed(codec, audio: np.ndarray, block_tokens: int = 16, threads: int = 1) -> dict:
    """The streaming decoder on `threads` torch threads: times real time by the wall clock and by the
    process's CPU time (what the decoder costs a core, whatever else the machine runs), and the join
    click ratio."""
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        tokens = codec.encode(torch.from_numpy(audio.astype(np.float32))[None, None])
        dec = codec.streaming_decoder()
        dec.push(tokens[..., :block_tokens])  # warm-up
        dec.reset()
        parts, t0, c0 = [], time.perf_counter(), time.process_time()
        for i in range(0, tokens.shape[-1], block_tokens):
            parts.append(dec.push(tokens[..., i : i + block_tokens]))
        parts.append(dec.flush())
        seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    finally:
        torch.set_num_threads(old)
    out = torch.cat(parts, dim=-1)[0].float().mean(0).numpy()
    whole = codec.decode(tokens)[0].float().mean(0).numpy()
    n = min(len(out), len(whole))
    # joins sit where each block's audio ends, less the decoder's latency
    return {
        "x_real_time": len(out) / codec.sample_rate / seconds,
        "x_real_time_cpu": len(out) / codec.sample_rate / cpu,
        "threads": threads,
        "block_tokens": block_tokens,
        "latency_ms": dec.latency_samples / codec.sample_rate * 1e3,
        "stream_vs_whole_max_abs": float(np.abs(out[:n] - whole[:n]).max()),
        "join_click_ratio": join_click_ratio(
            out[dec.latency_samples :], block_tokens * codec.hop, codec.sample_rate
        ),
    }


def _parameters(codec) -> int:
    """Trained parameters of a codec (the VAE's, for an Oobleck one; none for a fixed transform)."""
    module = getattr(codec, "vae", codec)
    return sum(p.numel() for p in module.parameters()) if hasattr(module, "parameters") else 0


def codec_report(
    model_path: str | Path,
    data_dir: str | Path,
    split_name: str = "test",
    max_examples: int | None = None,
    window: float = 10.0,
    melody: bool = True,
    speed: bool = True,
) -> dict:
    """Voicing and pitch of the lead stems, and tempo of the mixes (per `window` s), clean and through the
    codec. `pitch_r` pools the frames voiced in both over every example; `pitch_kept` is the share of the
    clean voiced frames that come through voiced and within a semitone. `spectrum` gives the 95 % roll-off
    through the codec against clean (the median over lead stems and mixes of codec / clean - 1) and the mel
    and STFT distances; `melody` the melody check; `decode` the streaming decoder's speed on one core."""
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
    roll_lead, roll_mix, mel_d, stft_d = [], [], [], []

    def spectrum(clean: np.ndarray, through: np.ndarray, rolls: list) -> None:
        if np.sqrt(np.mean(clean**2)) < 1e-4:
            return
        rolls.append(rolloff_hz(through, rate) / max(rolloff_hz(clean, rate), 1.0) - 1.0)
        mel_d.append(mel_distance(clean, through, rate))
        stft_d.append(stft_distance(clean, through))

    for ex in examples:
        mix = read_mix(data_dir, ex, rate)
        through = codec(mix, rate)
        spectrum(mix, through, roll_mix)
        bpm = ex.get("labels", {}).get("bpm")
        if bpm:
            n = int(window * rate)
            for s in range(0, max(len(mix) - n, 0) + 1, n):
                tempo_clean.append(tempo_error(estimate_bpm(mix[s : s + n], rate), bpm))
                tempo_codec.append(tempo_error(estimate_bpm(through[s : s + n], rate), bpm))
        lead_path = data_dir / "stems" / ex["id"] / "lead.wav"
        if not lead_path.is_file():
            continue
        lead = read_mono(lead_path, rate)
        lead_through = codec(lead, rate)
        spectrum(lead, lead_through, roll_lead)
        a, b = control_curves(lead, cfg), control_curves(lead_through, cfg)
        voiced_clean.append(float(a.voiced.mean()))
        voiced_codec.append(float(b.voiced.mean()))
        both = (a.voiced > 0.5) & (b.voiced > 0.5)
        pitch_clean.extend(a.pitch_midi[both].tolist())
        pitch_codec.extend(b.pitch_midi[both].tolist())
        kept, voiced = kept_frames(a, b)
        close, clean_frames = close + kept, clean_frames + voiced
    r = float(np.corrcoef(pitch_clean, pitch_codec)[0, 1]) if len(pitch_clean) > 2 else float("nan")
    report = {
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
        "spectrum": {
            "rolloff95_vs_clean_lead": nanmedian(roll_lead),
            "rolloff95_vs_clean_mix": nanmedian(roll_mix),
            "rolloff95_vs_clean_worst": float(np.max(np.abs(roll_lead + roll_mix)))
            if roll_lead + roll_mix
            else None,
            "mel_distance": nanmean(mel_d),
            "stft_distance": nanmean(stft_d),
        },
        "parameters": _parameters(codec.codec),
    }
    if melody:
        from .melody import melody_check

        report["melody"] = melody_check(codec, rate)
    if speed:
        report["decode"] = decode_speed(codec.codec, read_mix(data_dir, examples[0], rate))
    return report
