"""The shipped default model: loads offline, plays 10 s of finite, audible music, and two very different
prompts come out different to the evaluation classifier that ships beside it."""

from __future__ import annotations

import os

import numpy as np

from lmdm_live.eval.classifier import Classifier
from lmdm_live.live.instrument import DEFAULT_MODEL_FILE, default_model_ref
from lmdm_live.live.stream import LMDMStream, StreamParams, render
from lmdm_live.model.bundle import LMDMModel
from lmdm_live.train.labels import STYLES

CLASSIFIER_DIR = DEFAULT_MODEL_FILE.parent / "classifier"
TECHNO = (
    "fast techno with saw lead, acid synth bass and warm pad and four-on-the-floor drums, in A minor, 130 bpm"
)
CHORALE = "slow chorale with church organ lead, church organ, no drums, in D major, 72 bpm"


def _play(model: LMDMModel, prompt: str, bpm: float, seconds: float = 10.0) -> np.ndarray:
    stream = LMDMStream(model, model.text_encoder(), seed=1, params=StreamParams.of(prompt, bpm=bpm))
    blocks = int(np.ceil(seconds / model.block_seconds))
    return render(stream, blocks)[0]


def test_default_model_ships_and_is_the_instrument_default():
    assert DEFAULT_MODEL_FILE.is_file()
    assert default_model_ref() == str(DEFAULT_MODEL_FILE)
    size = DEFAULT_MODEL_FILE.stat().st_size + sum(p.stat().st_size for p in CLASSIFIER_DIR.iterdir())
    assert size < 60e6
    # it lists what it knows (`lmdm-live styles`), each a style the evaluation classifier can judge
    known = LMDMModel.load(DEFAULT_MODEL_FILE).styles
    assert {"techno", "chorale"} <= set(known) <= set(Classifier.load(CLASSIFIER_DIR).trained["style"])
    assert all(desc.strip() for desc in known.values())


def test_default_model_plays_offline_and_follows_the_prompt():
    assert os.environ.get("HF_HUB_OFFLINE") == "1"  # scripts/test.sh runs offline, as a fresh machine would
    model = LMDMModel.load(DEFAULT_MODEL_FILE)
    assert model.layout.tempo
    techno, chorale = _play(model, TECHNO, 130.0), _play(model, CHORALE, 72.0)
    for audio in (techno, chorale):
        assert len(audio) >= 10 * model.sample_rate
        assert np.isfinite(audio).all()
        assert float(np.sqrt(np.mean(audio**2))) > 1e-3  # audible, not silence
    clf = Classifier.load(CLASSIFIER_DIR)
    n = 8 * model.sample_rate
    windows = (
        [techno[i : i + n] for i in (0, len(techno) - n)],
        [chorale[i : i + n] for i in (0, len(chorale) - n)],
    )
    p_techno = clf.predict(windows[0], model.sample_rate)
    p_chorale = clf.predict(windows[1], model.sample_rate)
    t, c = STYLES.index("techno"), STYLES.index("chorale")
    for a, b in zip(p_techno, p_chorale):
        # each prompt's own style is more likely in its own audio than in the other prompt's
        assert a.probs["style"][t] > b.probs["style"][t]
        assert b.probs["style"][c] > a.probs["style"][c]
