"""What a model knows: the styles its file lists, and the nearest of them to a prompt far from all."""

from __future__ import annotations

import pytest

from lmdm_live.model.bundle import LMDMModel
from lmdm_live.model.conditioners import MiniLMTextEncoder
from lmdm_live.model.lmdm import LMDMConfig
from lmdm_live.model.styles import StyleVocabulary
from lmdm_live.train.music import PROCEDURAL_STYLES, SCORE_STYLES, caption, procedural_piece
from lmdm_live.train.styles import RENDER_ORDER, STYLE_DESCRIPTIONS, style_piece


@pytest.fixture(scope="module")
def text():
    return MiniLMTextEncoder()


def test_prompts_near_and_far(text):
    vocab = StyleVocabulary(dict(STYLE_DESCRIPTIONS))
    assert vocab.nearest("string quartet in D minor", text)[0][0] == "string_quartet"
    assert vocab.nearest("fast jungle breaks", text)[0][0] == "jungle"
    assert vocab.far("dub techno with echoing chords", text) is None
    far = vocab.far("a baby crying on a train", text)
    assert far is not None and len(far) == 3 and set(far) <= set(STYLE_DESCRIPTIONS)
    assert vocab.far("", text) is None  # no prompt is not a far one


def test_every_training_caption_is_near(text):
    """Captions like those the model was trained on are never called far (else the line would be noise)."""
    import random

    vocab = StyleVocabulary(dict(STYLE_DESCRIPTIONS))
    for style in RENDER_ORDER:
        if style in SCORE_STYLES:  # rendered from music21 scores, captioned the same way
            continue
        for seed in range(3):
            rng = random.Random(seed)
            piece = (
                procedural_piece(style, rng, 8.0)
                if style in PROCEDURAL_STYLES
                else style_piece(style, rng, 8.0)
            )
            text_ = caption(piece, rng)
            assert vocab.far(text_, text) is None, text_


def test_the_styles_travel_with_the_model_file(tmp_path):
    m = LMDMModel.preset("tiny", lmdm=LMDMConfig(mode="causal", context_frames=8, block_frames=4))
    m.styles = {"dub": "slow dub", "techno": "fast techno"}
    m.save(tmp_path / "m.safetensors")
    assert LMDMModel.load(tmp_path / "m.safetensors").styles == m.styles
