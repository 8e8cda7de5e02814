"""The renderer's further styles: each writes a whole, deterministic piece in its own tempo range and meter,
captioned with its lead, mood, key and tempo; their grooves differ from each other and from today's; and
the styles the dataset tests do not reach render through FluidSynth to clean, audible stems."""

from __future__ import annotations

import random
import re
from itertools import combinations

import numpy as np
import pytest

from lmdm_live.train.dataset import STYLES_ORDER, RenderConfig, render_example
from lmdm_live.train.labels import FAMILIES, STYLES
from lmdm_live.train.music import (
    DRUMS,
    MOODS,
    PROGRAMS,
    STYLE_MOODS,
    STYLE_WORDS,
    Part,
    Piece,
    caption,
    procedural_piece,
    tempo_word,
)
from lmdm_live.train.styles import FURTHER_STYLES, SPECS, STYLE_DESCRIPTIONS, style_piece
from lmdm_live.train.styles.kit import HATS
from lmdm_live.train.synth import StemSynth

SECONDS = 30.0
SEEDS = range(8)


def _pieces(style: str) -> list[Piece]:
    return [style_piece(style, random.Random(seed), SECONDS) for seed in SEEDS]


def _bar(piece: Piece) -> float:
    return piece.beats_per_bar * 60.0 / piece.bpm


def _rhythm(piece: Piece, bar: int, hats: bool = False) -> set[tuple[int, int]]:
    """(position in the bar in 1/48ths, pitch) of the bar's rhythm section: the drum kit's hits, with or
    without the hi-hats (which a groove may ornament bar by bar), or, without a kit playing there, the bass
    (else the chords)."""
    length = _bar(piece)

    def onsets(part: Part, keep=lambda n: True) -> set[tuple[int, int]]:
        return {
            (round((n.start - bar * length) / length * 48), n.pitch)
            for n in part.notes
            if bar * length - 1e-6 <= n.start < (bar + 1) * length - 1e-6 and keep(n)
        }

    kit = [p for p in piece.parts if p.program == DRUMS]
    if kit and (found := onsets(kit[0], lambda n: hats or n.pitch not in HATS)):
        return found
    part = next((p for p in piece.parts if p.stem == "bass"), None) or next(
        p for p in piece.parts if p.stem == "chords"
    )
    return onsets(part)


def test_the_style_vocabulary_is_one_list_everywhere():
    assert len(STYLES) >= 18 and len(FURTHER_STYLES) >= 10
    assert tuple(STYLES_ORDER) == STYLES  # the classifier's style head is the render order
    assert STYLES[:8] == ("techno", "house", "hiphop", "dnb", "rock", "ambient", "chorale", "folk")
    assert list(STYLE_DESCRIPTIONS) == list(STYLES)
    for style, line in STYLE_DESCRIPTIONS.items():
        assert "\n" not in line and line.startswith(STYLE_WORDS[style] + ": ")
        assert re.search(r"\d+-\d+ bpm, [34]/4", line), line
    assert all(family in FAMILIES for family, _ in PROGRAMS.values())
    lead_families = set()
    for spec in SPECS.values():
        assert spec.tempo[0] < spec.tempo[1] and set(spec.meters) <= {3, 4} and set(spec.moods) <= set(MOODS)
        lead_families |= {PROGRAMS[p][0] for p in spec.leads}
    # the leads span the melodic families, so the lead head has every one of them to learn
    assert lead_families >= {"piano", "organ", "guitar", "strings", "brass", "reed", "pipe", "synth_lead"}


@pytest.mark.parametrize("style", FURTHER_STYLES)
def test_a_style_writes_whole_deterministic_pieces_with_full_captions(style):
    spec = SPECS[style]
    pieces = _pieces(style)
    assert pieces == _pieces(style)  # a pure function of the seed
    assert len({(p.bpm, p.key, p.mode) for p in pieces}) > 1
    for piece in pieces:
        assert piece.style == style
        assert spec.tempo[0] <= piece.bpm <= spec.tempo[1]
        assert piece.beats_per_bar in spec.meters and piece.mode in spec.modes
        lead = next(p for p in piece.parts if p.stem == "lead")
        assert lead.program in spec.leads and piece.lead == lead.family
        for part in piece.parts:  # every part plays, from the first bar on, within MIDI's ranges
            assert part.notes and min(n.start for n in part.notes) < min(_bar(piece), 2.5)
            assert all(0 <= n.pitch < 128 and 1 <= n.vel <= 127 and n.dur > 0 for n in part.notes)
        # the rhythm repeats with the bar the meter declares (bars 1 and 5: no fill or crash on either)
        assert _rhythm(piece, 1) == _rhythm(piece, 5) and _rhythm(piece, 1)

        assert piece.mood in spec.moods
        cap = caption(piece)
        words = PROGRAMS[lead.program][1]
        assert cap.startswith(f"{tempo_word(piece.bpm)} {piece.mood} {STYLE_WORDS[style]} with {words}")
        assert f"in {piece.key_name} {piece.mode}, {round(piece.bpm)} bpm" in cap and cap.endswith(" bpm")
        has_kit = any(p.program == DRUMS or p.family == "drums" for p in piece.parts)
        assert has_kit == ("drums" in cap and "no drums" not in cap)
        assert "lead lead" not in cap


def test_meters_and_moods_follow_the_piece():
    waltzes = [p for p in _pieces("jazz") if p.beats_per_bar == 3]
    assert waltzes and all("jazz waltz" in caption(p) for p in waltzes)
    assert any(p.beats_per_bar == 3 for p in _pieces("string_quartet"))
    for style in FURTHER_STYLES:
        for p in _pieces(style):
            if p.mood in ("dark", "melancholic", "tense") and p.mode == "major":
                pytest.fail(f"{style}: a {p.mood} piece in a major key")
            if p.mood in ("peaceful", "dreamy", "laid-back") and tempo_word(p.bpm) == "fast":
                pytest.fail(f"{style}: a fast {p.mood} piece")


def test_todays_styles_gain_a_mood_and_old_pieces_still_caption():
    p = procedural_piece("techno", random.Random(3), 8.0)
    assert p.mood in STYLE_MOODS["techno"] and f" {p.mood} techno with " in caption(p)
    moodless = Piece(**{**p.__dict__, "mood": ""})
    assert caption(moodless).startswith(f"{tempo_word(p.bpm)} techno with ")


def test_grooves_differ_between_styles():
    """Bar 1's rhythm section (the kit's hits, else the bass) differs between every two styles, the further
    ones and today's drum styles, by more than a hit or two."""
    grooves = {s: _rhythm(style_piece(s, random.Random(0), SECONDS), 1, True) for s in FURTHER_STYLES}
    for s in ("techno", "house", "hiphop", "dnb", "rock"):
        grooves[s] = _rhythm(procedural_piece(s, random.Random(0), SECONDS), 1, True)
    for a, b in combinations(grooves, 2):
        if a in FURTHER_STYLES:
            assert len(grooves[a] ^ grooves[b]) >= 4, (a, b)


STYLES_LEFT = ("lofi", "funk", "jazz", "bossa", "orchestral", "solo_piano", "string_quartet")


def test_styles_render_to_clean_audible_stems():
    """Through FluidSynth with the GM soundfont: every stem sounds, the mix is neither clipped nor quiet,
    and the labels carry the mood. These are the styles the dataset tests' 16 examples do not reach."""
    assert set(STYLES_LEFT) == set(STYLES[16:])
    cfg = RenderConfig(sample_rate=16000, seconds=2.5)
    synth = StemSynth(cfg.sample_rate)
    try:
        for style in STYLES_LEFT:
            entry, mix, stems, _ = render_example(STYLES_ORDER.index(style), cfg, synth, {})
            assert entry["labels"]["style"] == style and entry["labels"]["mood"] in entry["caption"]
            peak, rms_db = float(np.abs(mix).max()), 20 * np.log10(float(np.sqrt(np.mean(mix**2))))
            assert 0.05 < peak <= 0.95 + 1e-6 and -26 < rms_db < -14, (style, peak, rms_db)
            for name, audio in stems.items():
                assert np.abs(audio).max() > 1e-3, (style, name)
            if style == "string_quartet":
                assert "drums" not in stems
    finally:
        synth.close()
