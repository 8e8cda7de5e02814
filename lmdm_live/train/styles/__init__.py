"""The styles the renderer knows beyond music.py's loops and scores, and a line on every style.

Each further style is a `StyleSpec` (tempo range, meters, modes, lead programs, moods, description and the
function that writes its parts); `style_piece` draws a piece's tempo, key, mode and meter from it, lets
the style write its parts, then draws the mood, all from the piece's one `random.Random`.
"""

from __future__ import annotations

import random

from ..music import PROCEDURAL_STYLES, SCORE_STYLES, STYLE_TEMPO, STYLE_WORDS, Piece, pick_mood
from .band import DUB, FUNK, REGGAE
from .beats import JUNGLE, LOFI, TRAP
from .classical import ORCHESTRAL, SOLO_PIANO, STRING_QUARTET
from .dance import ACID, CHIPTUNE, MINIMAL, SYNTHWAVE
from .jazz import BOSSA, JAZZ
from .kit import Setup, StyleSpec

SPECS: dict[str, StyleSpec] = {
    s.name: s
    for s in (
        DUB,
        REGGAE,
        ACID,
        MINIMAL,
        SYNTHWAVE,
        CHIPTUNE,
        TRAP,
        JUNGLE,
        LOFI,
        FUNK,
        JAZZ,
        BOSSA,
        ORCHESTRAL,
        SOLO_PIANO,
        STRING_QUARTET,
    )  # fmt: skip
}
FURTHER_STYLES = tuple(SPECS)
# every style in the order the renderer takes them in turn (and the classifier's style head lists them)
RENDER_ORDER = PROCEDURAL_STYLES + SCORE_STYLES + FURTHER_STYLES

_TODAY = {
    "techno": "four-on-the-floor kick with off-beat hats and claps, acid or synth bass, pads, square or saw lead",
    "house": "four-on-the-floor with open hats, off-beat bass, piano, electric piano or organ chords, saw, "
    "vibraphone or alto sax lead",
    "hiphop": "swung boom-bap drums, electric or upright bass, electric piano or vibraphone chords, electric "
    "piano, alto sax or trumpet lead",
    "dnb": "fast two-step breakbeat drums with tom fills, long synth bass, pads or strings, saw or flute lead",
    "rock": "rock drums with crashes and fills, picked or electric bass on eighths, distorted or overdriven "
    "power chords, guitar or organ lead",
    "ambient": "no drums, long pads and choir, a slow vibraphone, flute or piano motif",
    "chorale": "Bach chorales from music21's corpus in four voices on strings, organ, brass, winds or piano",
    "folk": "folk tunes from music21's corpus (Essen, O'Neill's) on flute, violin, whistle, sax or guitar over "
    "a strummed I/IV/V accompaniment",
}


def _describe(style: str) -> str:
    if style in SPECS:
        spec = SPECS[style]
        text, (lo, hi) = spec.description, spec.tempo
        meters = " or ".join(f"{m}/4" for m in sorted(set(spec.meters), reverse=True))
    else:
        text, (lo, hi), meters = _TODAY[style], STYLE_TEMPO[style], "4/4"
    return f"{STYLE_WORDS[style]}: {text}; {lo}-{hi} bpm, {meters}"


# style label -> "caption word: what it sounds like; tempo range, meters" (what `lmdm-live styles` lists)
STYLE_DESCRIPTIONS: dict[str, str] = {s: _describe(s) for s in RENDER_ORDER}


def style_piece(style: str, rng: random.Random, seconds: float) -> Piece:
    """A piece of one of the further styles, a pure function of `rng`'s state."""
    spec = SPECS[style]
    lo, hi = spec.tempo
    bpm = float(rng.randint(lo, hi))
    setup = Setup(bpm, rng.randrange(12), rng.choice(spec.modes), rng.choice(spec.meters), seconds)
    parts, groove = spec.make(setup, rng)
    lead = next(p for p in parts if p.stem == "lead")
    mood = pick_mood(rng, spec.moods, setup.mode, bpm)
    return Piece(
        style, bpm, setup.key, setup.mode, setup.beats_per_bar, seconds, parts, lead.family, groove, mood=mood
    )


__all__ = ["FURTHER_STYLES", "RENDER_ORDER", "SPECS", "STYLE_DESCRIPTIONS", "StyleSpec", "style_piece"]
