"""The label vocabularies shared by the training-data renderer and the evaluation classifier.

One place, so a caption's labels and the classifier's heads always mean the same classes in the same order.
"""

from __future__ import annotations

# the renderer's styles in its render order (train/styles RENDER_ORDER): today's eight first, so their
# indices stay where they were, then the further styles
STYLES = (
    "techno", "house", "hiphop", "dnb", "rock", "ambient", "chorale", "folk",
    "dub", "reggae", "acid", "minimal", "synthwave", "chiptune", "trap", "jungle",
    "lofi", "funk", "jazz", "bossa", "orchestral", "solo_piano", "string_quartet",
)  # fmt: skip
FAMILIES = (
    "piano",
    "organ",
    "guitar",
    "bass",
    "synth_bass",
    "strings",
    "brass",
    "reed",
    "pipe",
    "synth_lead",
    "synth_pad",
    "drums",
)
TEMPO_BUCKETS = ("slow", "mid", "fast")
MODES = ("major", "minor")

# single-choice heads and their vocabularies; "lead" is one of FAMILIES
HEADS: dict[str, tuple[str, ...]] = {
    "style": STYLES,
    "tempo_bucket": TEMPO_BUCKETS,
    "mode": MODES,
    "lead": FAMILIES,
}


def tempo_bucket(bpm: float) -> str:
    """slow below 95 bpm, mid below 125, fast from 125 on."""
    if bpm < 95:
        return "slow"
    if bpm < 125:
        return "mid"
    return "fast"


def head_targets(labels: dict) -> dict[str, str]:
    """The single-choice head labels of an example; the tempo bucket is derived from bpm when absent.

    Heads the labels say nothing about are left out, so they are neither trained nor scored.
    """
    out = {k: labels[k] for k in ("style", "mode", "lead") if labels.get(k) is not None}
    if labels.get("tempo_bucket") is not None:
        out["tempo_bucket"] = labels["tempo_bucket"]
    elif labels.get("bpm") is not None:
        out["tempo_bucket"] = tempo_bucket(float(labels["bpm"]))
    for head, value in out.items():
        if value not in HEADS[head]:
            raise ValueError(f"unknown {head} label {value!r}; known: {', '.join(HEADS[head])}")
    return out
