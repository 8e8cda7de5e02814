"""The melody check: General MIDI leads of five families play known melodies; does pitch survive a codec?

Each lead plays a fixed melody over two octaves of its range (scale runs, leaps and a tune-like walk),
rendered from MIDI by FluidSynth without reverb, so every frame has a known note. A frame counts where the
clean render is on that note (within half a semitone, by the same swift-f0 tracker the sketch uses) and
is judged kept when the codec's output is on it too. The first frames after each onset (the attack) and
the last before the next are left out: there the note is not yet, or no longer, one pitch.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..dsp.sketch import SketchConfig, control_curves

# (family, GM program, lowest MIDI note of its two octaves)
LEADS: tuple[tuple[str, int, int], ...] = (
    ("pipe: flute", 73, 67),
    ("strings: violin", 40, 57),
    ("brass: trumpet", 56, 55),
    ("piano: grand piano", 0, 48),
    ("synth lead: saw", 81, 48),
    ("reed: alto sax", 65, 51),
    ("guitar: nylon", 24, 45),
    ("organ: reed organ", 20, 48),  # the drawbar organ's 16' stop reads an octave low to the tracker, clean
)
NOTE_S = 0.36
SKIP_ONSET_S = 0.07
SKIP_RELEASE_S = 0.03


@dataclass(frozen=True)
class Melody:
    notes: list[tuple[float, float, int]]  # (start s, duration s, MIDI pitch)
    seconds: float


def melody(low: int, seed: int = 0) -> Melody:
    """Up and down two octaves of the major scale from `low`, then a seeded walk with leaps over them."""
    steps = (0, 2, 4, 5, 7, 9, 11)
    scale = [low + 12 * (d // 7) + steps[d % 7] for d in range(15)]  # two octaves, both ends
    pitches = scale + scale[-2::-1]
    rng = random.Random(seed)
    i = 7
    for _ in range(30):
        i = min(max(i + rng.choice((-4, -2, -1, 1, 2, 3, 5, -7, 7)), 0), 14)
        pitches.append(scale[i])
    notes = [(k * NOTE_S, NOTE_S * 0.95, p) for k, p in enumerate(pitches)]
    return Melody(notes, len(pitches) * NOTE_S + 0.5)


def render_melody(program: int, mel: Melody, sample_rate: int) -> np.ndarray:
    from ..train.music import Note, Part
    from ..train.synth import StemSynth

    synth = StemSynth(sample_rate, reverb=False)
    try:
        part = Part("lead", program, [Note(s, d, p, 100) for s, d, p in mel.notes])
        audio = synth.render(part, int(mel.seconds * sample_rate))
    finally:
        synth.close()
    return audio / max(float(np.abs(audio).max()), 1e-6) * 0.5


def note_track(mel: Melody, n_frames: int, hop: int, sample_rate: int) -> np.ndarray:
    """The note each tracker frame should hear (NaN where no single note does)."""
    t = np.arange(n_frames) * hop / sample_rate
    out = np.full(n_frames, np.nan)
    for s, d, p in mel.notes:
        out[(t >= s + SKIP_ONSET_S) & (t < s + d - SKIP_RELEASE_S)] = p
    return out


def on_note(audio: np.ndarray, target: np.ndarray, sample_rate: int) -> np.ndarray:
    c = control_curves(audio.astype(np.float32), SketchConfig(sample_rate=sample_rate, hop=512, median=1))
    n = min(len(c.pitch_midi), len(target))
    ok = np.zeros(len(target), bool)
    ok[:n] = (c.voiced[:n] > 0.5) & (np.abs(c.pitch_midi[:n] - target[:n]) < 0.5)
    return ok


def melody_check(codec: Callable[[np.ndarray, int], np.ndarray], sample_rate: int, seed: int = 0) -> dict:
    """Per lead: frames on the note clean, and the share of those on it through `codec`."""
    rows, kept_all, clean_all = [], 0, 0
    for name, program, low in LEADS:
        mel = melody(low, seed)
        clean = render_melody(program, mel, sample_rate)
        target = note_track(mel, len(clean) // 512, 512, sample_rate)
        ok_clean = on_note(clean, target, sample_rate)
        ok_codec = on_note(codec(clean, sample_rate), target, sample_rate)
        n_clean, n_kept = int(ok_clean.sum()), int((ok_clean & ok_codec).sum())
        rows.append(
            {
                "lead": name,
                "program": program,
                "frames_with_a_note": int(np.isfinite(target).sum()),
                "on_pitch_clean": n_clean,
                "kept": n_kept / n_clean if n_clean else float("nan"),
            }
        )
        kept_all, clean_all = kept_all + n_kept, clean_all + n_clean
    return {"leads": rows, "kept": kept_all / clean_all if clean_all else float("nan")}
