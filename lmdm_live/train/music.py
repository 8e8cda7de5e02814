"""Musical material for the training renders: the shared pieces (notes, parts, pieces, harmony, moods and
captions), today's procedural loop styles and real scores from music21's corpus. The further styles live
in train/styles.

A `Piece` is a few `Part`s of note events in seconds plus the parameters a caption is written from. Every
random choice goes through one `random.Random`, so a piece is a pure function of its seed.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path

NOTE_NAMES = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")
MAJOR = (0, 2, 4, 5, 7, 9, 11)
MINOR = (0, 2, 3, 5, 7, 8, 10)
DRUMS = -1  # program of the GM percussion channel

# General MIDI programs used by the renders, with the family label and the caption word of each.
PROGRAMS: dict[int, tuple[str, str]] = {
    DRUMS: ("drums", "drums"),
    0: ("piano", "grand piano"),
    4: ("piano", "electric piano"),
    11: ("piano", "vibraphone"),
    16: ("organ", "drawbar organ"),
    19: ("organ", "church organ"),
    24: ("guitar", "nylon guitar"),
    25: ("guitar", "steel guitar"),
    27: ("guitar", "clean electric guitar"),
    29: ("guitar", "overdriven guitar"),
    30: ("guitar", "distorted guitar"),
    33: ("bass", "electric bass"),
    34: ("bass", "picked bass"),
    32: ("bass", "upright bass"),
    38: ("synth_bass", "acid synth bass"),
    39: ("synth_bass", "synth bass"),
    40: ("strings", "violin"),
    42: ("strings", "cello"),
    48: ("strings", "string ensemble"),
    56: ("brass", "trumpet"),
    61: ("brass", "brass section"),
    65: ("reed", "alto sax"),
    68: ("reed", "oboe"),
    71: ("reed", "clarinet"),
    73: ("pipe", "flute"),
    78: ("pipe", "whistle"),
    80: ("synth_lead", "square lead"),
    81: ("synth_lead", "saw lead"),
    89: ("synth_pad", "warm pad"),
    91: ("synth_pad", "choir pad"),
    95: ("synth_pad", "sweep pad"),
    # the solo melodies' further lead sounds (train/solo.py)
    72: ("pipe", "piccolo"),
    74: ("pipe", "recorder"),
    75: ("pipe", "pan flute"),
    41: ("strings", "viola"),
    43: ("strings", "contrabass"),
    57: ("brass", "trombone"),
    58: ("brass", "tuba"),
    60: ("brass", "french horn"),
    64: ("reed", "soprano sax"),
    66: ("reed", "tenor sax"),
    70: ("reed", "bassoon"),
    1: ("piano", "bright piano"),
    21: ("organ", "accordion"),
    82: ("synth_lead", "calliope lead"),
    84: ("synth_lead", "charang lead"),
    87: ("synth_lead", "bass and lead"),
    # the further styles' sounds (train/styles)
    7: ("piano", "clavinet"),
    10: ("piano", "music box"),
    12: ("piano", "marimba"),
    17: ("organ", "percussive organ"),
    22: ("organ", "harmonica"),
    26: ("guitar", "jazz guitar"),
    28: ("guitar", "muted guitar"),
    35: ("bass", "fretless bass"),
    36: ("bass", "slap bass"),
    44: ("strings", "tremolo strings"),
    45: ("strings", "pizzicato strings"),
    47: ("drums", "timpani"),
    49: ("strings", "slow strings"),
    50: ("strings", "synth strings"),
    59: ("brass", "muted trumpet"),
    62: ("brass", "synth brass"),
    90: ("synth_pad", "polysynth pad"),
}

# GM drum keys
KICK, SNARE, CLAP, HAT, OPEN_HAT, RIDE, CRASH, LOW_TOM = 36, 38, 39, 42, 46, 51, 49, 45


@dataclass
class Note:
    start: float  # seconds
    dur: float
    pitch: int
    vel: int


@dataclass
class Part:
    stem: str  # drums | bass | chords | lead
    program: int
    notes: list[Note] = field(default_factory=list)

    @property
    def family(self) -> str:
        return PROGRAMS[self.program][0]


@dataclass
class Piece:
    style: str
    bpm: float
    key: int  # pitch class of the tonic
    mode: str  # major | minor
    beats_per_bar: int
    seconds: float
    parts: list[Part]
    lead: str  # family of the lead part
    drums: str  # words for the groove ("" without drums)
    source: str = "procedural"
    mood: str = ""  # a word from MOODS ("" for pieces made before moods were captioned)

    @property
    def key_name(self) -> str:
        return NOTE_NAMES[self.key % 12]

    @property
    def families(self) -> list[str]:
        return sorted({p.family for p in self.parts if p.notes})


# --- harmony -------------------------------------------------------------------------------------------


def scale_pitch(key: int, mode: str, degree: int, octave: int) -> int:
    """MIDI pitch of scale degree (0-based, may exceed 6) in `octave` (C4 = 60 is octave 4)."""
    steps = MAJOR if mode == "major" else MINOR
    return 12 * (octave + 1) + key + steps[degree % 7] + 12 * (degree // 7)


def triad(key: int, mode: str, degree: int, octave: int) -> list[int]:
    return [scale_pitch(key, mode, degree + i, octave) for i in (0, 2, 4)]


def chord(key: int, mode: str, degree: int, octave: int, size: int = 4, dominant: bool = False) -> list[int]:
    """Diatonic thirds stacked on a degree: 3 a triad, 4 a seventh, 5 a ninth chord. `dominant` raises the
    minor mode's seventh step, so the V of a minor key is the dominant seventh that leads home."""
    notes = [scale_pitch(key, mode, degree + 2 * i, octave) for i in range(size)]
    if dominant and mode == "minor":
        notes = [p + 1 if (p - key) % 12 == 10 else p for p in notes]
    return notes


PROGRESSIONS = {
    "major": [(0, 4, 5, 3), (0, 5, 3, 4), (0, 3, 4, 4), (0, 3, 0, 4), (5, 3, 0, 4)],
    "minor": [(0, 5, 2, 6), (0, 3, 4, 0), (0, 6, 5, 6), (0, 3, 6, 2), (0, 0, 5, 6)],
}


# --- drum grooves (one bar of 16 steps: (step, key, velocity)) ------------------------------------------

GROOVES: dict[str, tuple[str, list[tuple[int, int, int]]]] = {
    "techno": (
        "four-on-the-floor drums",
        [(s, KICK, 118) for s in (0, 4, 8, 12)]
        + [(s, HAT, 80) for s in (2, 6, 10, 14)]
        + [(s, CLAP, 90) for s in (4, 12)],
    ),
    "house": (
        "four-on-the-floor drums with open hats",
        [(s, KICK, 115) for s in (0, 4, 8, 12)]
        + [(s, OPEN_HAT, 78) for s in (2, 6, 10, 14)]
        + [(s, CLAP, 100) for s in (4, 12)]
        + [(s, HAT, 55) for s in (1, 3, 5, 7, 9, 11, 13, 15)],
    ),
    "hiphop": (
        "boom bap drums",
        [(0, KICK, 120), (7, KICK, 100), (10, KICK, 110)]
        + [(s, SNARE, 115) for s in (4, 12)]
        + [(s, HAT, 70) for s in (0, 2, 4, 6, 8, 10, 12, 14)],
    ),
    "dnb": (
        "breakbeat drums",
        [(0, KICK, 120), (10, KICK, 110)]
        + [(s, SNARE, 118) for s in (4, 12)]
        + [(s, HAT, 72) for s in range(0, 16, 2)]
        + [(15, SNARE, 60)],
    ),
    "rock": (
        "rock drums",
        [(s, KICK, 118) for s in (0, 8, 10)]
        + [(s, SNARE, 115) for s in (4, 12)]
        + [(s, HAT, 80) for s in range(0, 16, 2)],
    ),
}

STYLE_TEMPO = {
    "techno": (124, 140),
    "house": (116, 126),
    "hiphop": (78, 96),
    "dnb": (160, 176),
    "rock": (96, 150),
    "ambient": (60, 90),
    "chorale": (60, 100),
    "folk": (84, 132),
}

# style -> (bass programs, chord programs, lead programs)
STYLE_SOUNDS: dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]] = {
    "techno": ((38, 39), (89, 95), (80, 81)),
    "house": ((33, 39), (0, 4, 16), (81, 11, 65)),
    "hiphop": ((33, 32), (4, 11), (4, 65, 56)),
    "dnb": ((39, 38), (89, 48), (81, 73)),
    "rock": ((34, 33), (30, 29), (29, 30, 16)),
    "ambient": ((), (89, 91, 95), (11, 73, 0)),
}

PROCEDURAL_STYLES = tuple(STYLE_SOUNDS)
SCORE_STYLES = ("chorale", "folk")


def procedural_piece(style: str, rng: random.Random, seconds: float) -> Piece:
    """A loop-based piece: drums, bass, chords and a lead over a four-chord progression."""
    lo, hi = STYLE_TEMPO[style]
    bpm = float(rng.randint(lo, hi))
    mode = rng.choice(("major", "minor")) if style in ("house", "rock", "ambient") else "minor"
    if style in ("hiphop", "techno") and rng.random() < 0.3:
        mode = "major"
    key = rng.randrange(12)
    beat = 60.0 / bpm
    step = beat / 4
    bar = 4 * beat
    n_bars = int(seconds / bar) + 2
    bass_progs, chord_progs, lead_progs = STYLE_SOUNDS[style]
    prog = rng.choice(PROGRESSIONS[mode])
    swing = 0.33 * step if style == "hiphop" else 0.0

    def at(bar_i: int, s: int) -> float:
        return bar_i * bar + s * step + (swing if s % 2 else 0.0)

    parts: list[Part] = []
    drum_words = ""
    if style in GROOVES:
        drum_words, groove = GROOVES[style]
        drums = Part("drums", DRUMS)
        for b in range(n_bars):
            for s, k, v in groove:
                drums.notes.append(Note(at(b, s), step, k, max(1, min(127, v + rng.randint(-8, 8)))))
            if b % 4 == 3 and style in ("rock", "dnb"):
                drums.notes.append(Note(at(b, 14), step, LOW_TOM, 100))
            if b % 8 == 0 and style in ("rock", "techno"):
                drums.notes.append(Note(at(b, 0), 2 * beat, CRASH, 90))
        parts.append(drums)

    if bass_progs:
        bass = Part("bass", rng.choice(bass_progs))
        pattern = {
            "techno": [0, 2, 3, 6, 8, 10, 11, 14],
            "house": [2, 6, 10, 14],
            "hiphop": [0, 3, 8, 10],
            "dnb": [0, 10],
            "rock": list(range(0, 16, 2)),
        }[style]
        for b in range(n_bars):
            root = scale_pitch(key, mode, prog[b % 4], 2)
            for s in pattern:
                jump = 12 if style == "techno" and rng.random() < 0.25 else 0
                length = {"dnb": 6 * step, "hiphop": 2.5 * step}.get(style, 1.6 * step)
                bass.notes.append(Note(at(b, s), length, root + jump, rng.randint(95, 115)))
        parts.append(bass)

    chords = Part("chords", rng.choice(chord_progs))
    for b in range(n_bars):
        notes = triad(key, mode, prog[b % 4], 4 if chords.family != "guitar" else 3)
        if style in ("ambient", "dnb") or chords.family == "synth_pad":
            hits = [(0, 16 * step)]
        elif style == "rock":
            notes = [notes[0], notes[0] + 7, notes[0] + 12]  # power chord
            hits = [(s, 1.8 * step) for s in range(0, 16, 2)]
        elif style == "house":
            hits = [(s, 1.5 * step) for s in (2, 6, 10, 14)]
        else:
            hits = [(0, 7 * step), (8, 7 * step)]
        for s, d in hits:
            for p in notes:
                chords.notes.append(Note(at(b, s), d, p, rng.randint(70, 90)))
    parts.append(chords)

    lead = Part("lead", rng.choice(lead_progs))
    motif_len = rng.choice((4, 8))
    rhythm = sorted(rng.sample(range(16), motif_len))
    degrees = [rng.choice((0, 2, 4, 4, 7, 5, 1, 6)) for _ in rhythm]
    for b in range(n_bars):
        shift = prog[b % 4] if rng.random() < 0.5 else 0
        if style == "ambient" and b % 2:
            continue
        for s, d in zip(rhythm, degrees):
            nxt = [r for r in rhythm if r > s]
            length = ((nxt[0] if nxt else 16) - s) * step * 0.9
            lead.notes.append(
                Note(at(b, s), length, scale_pitch(key, mode, d + shift, 5), rng.randint(85, 110))
            )
    parts.append(lead)
    mood = pick_mood(rng, STYLE_MOODS[style], mode, bpm)  # drawn last: the notes stay what they were
    return Piece(style, bpm, key, mode, 4, seconds, parts, lead.family, drum_words, mood=mood)


# --- real scores ------------------------------------------------------------------------------------------

SCORE_ENSEMBLES = {
    "chorale": ((48, 48, 42, 42), (19, 19, 19, 19), (61, 61, 61, 61), (68, 71, 71, 42), (0, 0, 0, 0)),
    "folk": ((73,), (40,), (78,), (65,), (25,)),
}
FOLK_ACCOMP = (24, 25, 0)


def score_paths(style: str) -> list[str]:
    """music21 corpus files of a score style: Bach chorales, or folk tunes (Essen, O'Neill's)."""
    from music21 import corpus

    if style == "chorale":
        paths = [str(p) for p in corpus.getComposer("bach") if str(p).endswith((".mxl", ".xml", ".krn"))]
    elif style == "folk":
        paths = [str(p) for p in corpus.getPaths() if "essenFolksong" in str(p) or "oneills1850" in str(p)]
    else:
        raise ValueError(f"no scores for style {style!r}")
    return sorted(paths)


def score_piece(style: str, path: str, rng: random.Random, seconds: float) -> Piece | None:
    """Parts of a music21 score at a random tempo (None when the file has no usable parts)."""
    from music21 import converter

    try:
        score = converter.parse(path)
    except Exception:  # noqa: BLE001 - a corpus file music21 cannot read is simply skipped
        return None
    if hasattr(score, "scores"):  # an Opus of several tunes: take one
        scores = list(score.scores)
        if not scores:
            return None
        score = rng.choice(scores)
    parts = [p for p in score.parts if p.flatten().notes]
    if not parts:
        return None
    try:
        k = score.analyze("key")
        key, mode = k.tonic.pitchClass, ("minor" if k.mode == "minor" else "major")
    except Exception:  # noqa: BLE001
        key, mode = 0, "major"
    ts = score.flatten().getElementsByClass("TimeSignature")
    beats_per_bar = int(ts[0].numerator) if len(ts) else 4
    if beats_per_bar not in (2, 3, 4, 6):
        beats_per_bar = 4
    lo, hi = STYLE_TEMPO[style]
    bpm = float(rng.randint(lo, hi))
    beat = 60.0 / bpm
    transpose = rng.randint(-3, 3)
    key = (key + transpose) % 12
    ensemble = rng.choice(SCORE_ENSEMBLES[style])
    out: list[Part] = []
    for i, part in enumerate(parts[:4]):
        stem = "lead" if i == 0 else ("bass" if i == len(parts[:4]) - 1 and i > 1 else "chords")
        prog = ensemble[min(i, len(ensemble) - 1)]
        notes = []
        for n in part.flatten().notes:
            start = float(n.offset) * beat
            if start >= seconds + 1:
                break
            dur = max(float(n.quarterLength) * beat * 0.95, 0.05)
            for p in n.pitches:
                notes.append(Note(start, dur, int(p.midi) + transpose, rng.randint(75, 100)))
        out.append(Part(stem, prog, notes))
    if style == "folk":  # a strummed accompaniment under the tune, from its key's I/IV/V per bar
        out.append(_folk_accompaniment(out[0], key, mode, beats_per_bar, beat, seconds, rng))
    length = max((n.start + n.dur for p in out for n in p.notes), default=0.0)
    if length < seconds * 0.5:
        return None
    source = "music21:" + "/".join(Path(path).parts[-2:])
    mood = pick_mood(rng, STYLE_MOODS[style], mode, bpm)
    return Piece(style, bpm, key, mode, beats_per_bar, seconds, out, out[0].family, "", source, mood)


def _folk_accompaniment(
    tune: Part, key: int, mode: str, beats_per_bar: int, beat: float, seconds: float, rng: random.Random
) -> Part:
    acc = Part("chords", rng.choice(FOLK_ACCOMP))
    bar = beats_per_bar * beat
    for b in range(int(seconds / bar) + 1):
        pcs = [n.pitch % 12 for n in tune.notes if b * bar <= n.start < (b + 1) * bar]
        best = max((0, 3, 4), key=lambda d: sum(p in {x % 12 for x in triad(key, mode, d, 3)} for p in pcs))
        for s in range(beats_per_bar):
            for p in triad(key, mode, best, 3):
                acc.notes.append(Note(b * bar + s * beat, beat * 0.8, p, 70 if s else 85))
    return acc


# --- moods -----------------------------------------------------------------------------------------------

MOODS = (
    "dark", "melancholic", "tense", "solemn", "dreamy", "peaceful", "laid-back", "nostalgic",
    "warm", "hypnotic", "groovy", "playful", "uplifting", "triumphant", "gritty", "energetic",
)  # fmt: skip
MINOR_MOODS = frozenset({"dark", "melancholic", "tense"})  # they need a minor key
MAJOR_MOODS = frozenset({"peaceful", "warm", "playful", "uplifting", "triumphant"})  # they need a major one
CALM_MOODS = frozenset({"melancholic", "solemn", "dreamy", "peaceful", "laid-back"})  # never fast
BUSY_MOODS = frozenset({"energetic"})  # never slow

# today's styles' moods (the further styles carry theirs in train/styles)
STYLE_MOODS: dict[str, tuple[str, ...]] = {
    "techno": ("dark", "hypnotic", "energetic", "tense", "uplifting"),
    "house": ("uplifting", "groovy", "warm", "energetic", "dark"),
    "hiphop": ("laid-back", "gritty", "dark", "nostalgic", "warm"),
    "dnb": ("energetic", "dark", "tense", "uplifting"),
    "rock": ("energetic", "gritty", "uplifting", "dark", "melancholic"),
    "ambient": ("dreamy", "peaceful", "melancholic", "dark", "hypnotic"),
    "chorale": ("solemn", "peaceful", "melancholic", "uplifting"),
    "folk": ("playful", "warm", "nostalgic", "melancholic", "uplifting"),
}


def pick_mood(rng: random.Random, palette: tuple[str, ...], mode: str, bpm: float) -> str:
    """One of the style's moods that fits the piece's mode and tempo (the whole palette when none fits)."""
    clash = MAJOR_MOODS if mode == "minor" else MINOR_MOODS
    clash |= {"fast": CALM_MOODS, "slow": BUSY_MOODS}.get(tempo_word(bpm), frozenset())
    return rng.choice([m for m in palette if m not in clash] or list(palette))


# --- captions ---------------------------------------------------------------------------------------------

STYLE_WORDS = {
    "techno": "techno",
    "house": "house",
    "hiphop": "hip hop",
    "dnb": "drum and bass",
    "rock": "rock",
    "ambient": "ambient",
    "chorale": "chorale",
    "folk": "folk tune",
    "dub": "dub",
    "reggae": "reggae",
    "acid": "acid house",
    "minimal": "minimal techno",
    "synthwave": "synthwave",
    "chiptune": "chiptune",
    "trap": "trap",
    "jungle": "jungle",
    "lofi": "lo-fi hip hop",
    "funk": "funk",
    "jazz": "jazz",
    "bossa": "bossa nova",
    "orchestral": "orchestral",
    "solo_piano": "solo piano",
    "string_quartet": "string quartet",
}


def tempo_word(bpm: float) -> str:
    return "slow" if bpm < 95 else ("mid-tempo" if bpm < 125 else "fast")


def caption(piece: Piece, rng: random.Random | None = None) -> str:
    """A caption from the piece's parameters: tempo, mood, style, lead sound, the other instruments, groove,
    key and bpm ("fast dark techno with saw lead, acid synth bass and warm pad and four-on-the-floor drums,
    in A minor, 130 bpm")."""
    lead = next(p for p in piece.parts if p.stem == "lead")
    lead_word = PROGRAMS[lead.program][1]
    others = [PROGRAMS[p.program][1] for p in piece.parts if p.stem in ("bass", "chords") and p.notes]
    others = [w for w in dict.fromkeys(others) if w != lead_word]
    lead_word = lead_word if lead_word.endswith("lead") else f"{lead_word} lead"
    mood = f"{piece.mood} " if piece.mood else ""
    words = f"{tempo_word(piece.bpm)} {mood}{STYLE_WORDS[piece.style]} with {lead_word}"
    if others:
        words += ", " + " and ".join(others)
    if piece.drums:
        words += f" and {piece.drums}"
    elif not any(p.program == DRUMS and p.notes for p in piece.parts):
        words += ", no drums"
    return f"{words}, in {piece.key_name} {piece.mode}, {round(piece.bpm)} bpm"
