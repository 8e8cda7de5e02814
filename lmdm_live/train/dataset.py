"""Training datasets on disk: rendered multi-stem music, or a user's own audio folder, in one format.

    DIR/index.json            {"format": "lmdm-dataset", "version": 1, "sample_rate", "hop", "examples": [...]}
    DIR/audio/<id>.wav        the mix, mono float32
    DIR/stems/<id>/<stem>.wav each stem (rendered data only); the stems sum to the mix
    DIR/controls/<id>.npz     per latent frame: bpm, beat_phase, bar_phase, pitch_midi, voiced, loudness_db,
                              centroid_hz (pitch from the lead stem, loudness and centroid from the mix),
                              lead_loudness_db, lead_centroid_hz (of the lead stem alone)

Rendering is resumable: examples already on disk are kept, so a stopped `train data` run goes on where it
stopped. Example i is a pure function of (seed, i).
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from ..model.checkpoint import write_json_atomic
from .labels import tempo_bucket
from .music import SCORE_STYLES, Piece, caption, procedural_piece, score_paths, score_piece
from .solo import SOLO_FAMILY_ORDER, solo_piece, solo_piece_caption
from .styles import FURTHER_STYLES, RENDER_ORDER, style_piece
from .synth import StemSynth, render_piece

FORMAT = "lmdm-dataset"
STYLES_ORDER = RENDER_ORDER  # today's loops, the scores, then the further styles (train/styles)
SPLITS = ("train", "valid", "test")
KINDS = ("styles", "solo")  # the style cycle (mix + stems), or solo melodies of each GM lead family
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif")


@dataclass(frozen=True)
class RenderConfig:
    sample_rate: int = 16000
    hop: int = 512
    seconds: float = 20.0
    seed: int = 0
    target_rms_db: float = -20.0
    soundfont: str | None = None
    kind: str = "styles"

    def __post_init__(self) -> None:
        if self.sample_rate < 8000 or self.hop < 1 or self.seconds <= 0:
            raise ValueError("sample_rate >= 8000, hop >= 1 and seconds > 0 are required")
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {self.kind!r}")

    @property
    def cycle(self) -> list[str]:
        """What example i renders: entry i % len(cycle); a split holds whole cycles."""
        return list(SOLO_FAMILY_ORDER if self.kind == "solo" else STYLES_ORDER)


def split_of(i: int, cycle: int = 1) -> str:
    """80/10/10 by whole cycles of `cycle` consecutive examples (the renderer's one-per-style turn), so
    every split holds every style. 'valid' and 'test' are held out from the generator; the eval
    classifier trains on 'valid' and is scored on 'test'."""
    return {8: "valid", 9: "test"}.get((i // cycle) % 10, "train")


def beat_grid(n_frames: int, hop: int, sr: int, bpm: float, beats_per_bar: int) -> tuple[np.ndarray, ...]:
    """bpm, beat phase and bar phase at the start of each latent frame (beat 0 at sample 0)."""
    beats = np.arange(n_frames) * hop / sr * bpm / 60.0
    return (
        np.full(n_frames, bpm, np.float32),
        (beats % 1.0).astype(np.float32),
        ((beats / beats_per_bar) % 1.0).astype(np.float32),
    )


def frame_controls(mix: np.ndarray, lead: np.ndarray | None, sr: int, hop: int) -> dict[str, np.ndarray]:
    """Sketch controls at the latent frame rate: pitch of the lead (or the mix), loudness and centroid of the
    mix, and the lead's own loudness and centroid (what a solo-melody window is sketched with)."""
    from ..dsp.sketch import SketchConfig, control_curves

    cfg = SketchConfig(sample_rate=sr, hop=hop)
    whole = control_curves(mix, cfg)
    pitched = control_curves(lead, cfg) if lead is not None else whole
    return {
        "pitch_midi": pitched.pitch_midi,
        "voiced": pitched.voiced,
        "loudness_db": whole.loudness_db,
        "centroid_hz": whole.centroid_hz,
        "lead_loudness_db": pitched.loudness_db,
        "lead_centroid_hz": pitched.centroid_hz,
    }


def solo_caption(entry: dict) -> str:
    """The caption of an example's lead stem played alone: what a hummed sketch asks for."""
    labels = entry["labels"]
    family = str(labels.get("lead", "")).replace("_", " ") or "an instrument"
    words = f"a solo melody on {family}, no drums"
    if "key" in labels and "mode" in labels:
        words += f", in {labels['key']} {labels['mode']}"
    if "bpm" in labels:
        words += f", {round(float(labels['bpm']))} bpm"
    return words


class DatasetWriter:
    """Writes examples and keeps index.json current, so an interrupted run resumes."""

    def __init__(self, out: str | Path, sample_rate: int, hop: int, kind: str = "styles") -> None:
        self.out = Path(out)
        self.kind = kind
        for sub in ("audio", "stems", "controls"):
            (self.out / sub).mkdir(parents=True, exist_ok=True)
        self.sample_rate, self.hop = sample_rate, hop
        self.index_path = self.out / "index.json"
        self.examples: dict[str, dict] = {}
        if self.index_path.is_file():
            index = json.loads(self.index_path.read_text())
            if index.get("format") != FORMAT:
                raise ValueError(f"{self.index_path} is not an lmdm dataset index")
            if (index["sample_rate"], index["hop"]) != (sample_rate, hop):
                raise ValueError(
                    f"{self.out} holds {index['sample_rate']} Hz / hop {index['hop']} data; "
                    f"asked for {sample_rate} Hz / hop {hop}"
                )
            if index.get("kind", "styles") != kind:
                raise ValueError(f"{self.out} holds {index.get('kind', 'styles')} renders; asked for {kind}")
            self.examples = {e["id"]: e for e in index["examples"]}

    def has(self, ex_id: str) -> bool:
        return ex_id in self.examples and (self.out / "audio" / f"{ex_id}.wav").is_file()

    @property
    def seconds(self) -> float:
        return sum(e["seconds"] for e in self.examples.values())

    def add(
        self,
        entry: dict,
        mix: np.ndarray,
        stems: dict[str, np.ndarray] | None,
        controls: dict[str, np.ndarray],
    ) -> None:
        ex_id = entry["id"]
        if stems:
            d = self.out / "stems" / ex_id
            d.mkdir(exist_ok=True)
            for name, audio in stems.items():
                sf.write(d / f"{name}.wav", audio, self.sample_rate, subtype="FLOAT")
        np.savez(self.out / "controls" / f"{ex_id}.npz", **controls)
        sf.write(self.out / "audio" / f"{ex_id}.wav", mix, self.sample_rate, subtype="FLOAT")
        self.examples[ex_id] = entry

    def flush(self) -> None:
        index = {
            "format": FORMAT,
            "version": 1,
            "sample_rate": self.sample_rate,
            "hop": self.hop,
            "kind": self.kind,
            "examples": [self.examples[k] for k in sorted(self.examples)],
        }
        write_json_atomic(self.index_path, index, indent=1)


def piece_for(i: int, cfg: RenderConfig, scores: dict[str, list[str]]) -> Piece:
    """Example i: styles in turn, each piece seeded from (seed, i)."""
    rng = random.Random(cfg.seed * 1_000_003 + i)
    if cfg.kind == "solo":
        return solo_piece(SOLO_FAMILY_ORDER[i % len(SOLO_FAMILY_ORDER)], rng, cfg.seconds)
    style = STYLES_ORDER[i % len(STYLES_ORDER)]
    if style in SCORE_STYLES:
        for _ in range(20):
            piece = score_piece(style, rng.choice(scores[style]), rng, cfg.seconds)
            if piece is not None:
                return piece
        raise RuntimeError(f"no usable {style} score found for example {i}")
    if style in FURTHER_STYLES:
        return style_piece(style, rng, cfg.seconds)
    return procedural_piece(style, rng, cfg.seconds)


def scores_for(cfg: RenderConfig) -> dict[str, list[str]]:
    """The corpus scores the style cycle draws its score-based styles from (none for solo melodies)."""
    return {s: score_paths(s) for s in SCORE_STYLES} if cfg.kind == "styles" else {}


def render_example(
    i: int, cfg: RenderConfig, synth: StemSynth, scores: dict[str, list[str]], split: str | None = None
):
    piece = piece_for(i, cfg, scores)
    stems = render_piece(synth, piece)
    mix = np.sum(list(stems.values()), axis=0)
    rms = float(np.sqrt(np.mean(mix**2))) + 1e-9
    rng = random.Random(cfg.seed * 7_000_003 + i)
    gain = 10 ** ((cfg.target_rms_db + rng.uniform(-4, 4)) / 20) / rms
    gain = min(gain, 0.95 / (float(np.abs(mix).max()) + 1e-9))
    stems = {k: (v * gain).astype(np.float32) for k, v in stems.items()}
    mix = np.sum(list(stems.values()), axis=0, dtype=np.float32)
    n = len(mix) // cfg.hop
    bpm, beat, bar = beat_grid(n, cfg.hop, cfg.sample_rate, piece.bpm, piece.beats_per_bar)
    controls = {"bpm": bpm, "beat_phase": beat, "bar_phase": bar}
    entry = {
        "id": f"{i:06d}",
        "seconds": len(mix) / cfg.sample_rate,
        "split": split or split_of(i, len(cfg.cycle)),
        "caption": solo_piece_caption(piece) if cfg.kind == "solo" else caption(piece),
        "labels": {
            "style": piece.style,
            "families": piece.families,
            "lead": piece.lead,
            "tempo_bucket": tempo_bucket(piece.bpm),
            "mode": piece.mode,
            "key": piece.key_name,
            "bpm": piece.bpm,
            "beats_per_bar": piece.beats_per_bar,
            **({"mood": piece.mood} if piece.mood else {}),
        },
        "stems": sorted(stems),
        "source": piece.source,
    }
    return entry, mix, stems, controls


def render_dataset(
    out: str | Path,
    hours: float,
    cfg: RenderConfig,
    progress: Callable[[int, int], None] | None = None,
    split: str | None = None,
    only: str | None = None,
) -> DatasetWriter:
    """Render until the dataset holds `hours` of audio (examples already there are kept). `split` puts the
    new examples in one split, e.g. more held-out `valid` renders for the evaluation classifier after the
    generator's training set was encoded. `only` renders just the examples that fall in that split, the same
    ones a whole render makes (each example depends on its index alone): a data set's test renders, for
    `eval model`, in a tenth of the time."""
    for name, value in (("split", split), ("only", only)):
        if value is not None and value not in SPLITS:
            raise ValueError(f"{name} must be one of {', '.join(SPLITS)}, got {value!r}")
    writer = DatasetWriter(out, cfg.sample_rate, cfg.hop, cfg.kind)
    total = max(1, int(np.ceil(hours * 3600 / cfg.seconds)))
    synth = StemSynth(cfg.sample_rate, cfg.soundfont)
    scores = scores_for(cfg)
    try:
        for i in range(total):
            if only is not None and split_of(i, len(cfg.cycle)) != only:
                continue
            if not writer.has(f"{i:06d}"):
                writer.add(*render_example(i, cfg, synth, scores, split))
                if i % 20 == 0:
                    writer.flush()
            if progress:
                progress(i + 1, total)
    finally:
        writer.flush()
        synth.close()
    return writer


# --- a user's own audio ---------------------------------------------------------------------------------


def folder_items(folder: Path) -> Iterator[tuple[Path, dict]]:
    """Audio files with their metadata: `captions.json` ({file: caption or {caption, bpm, labels}}), or a
    `<name>.txt` beside the file, or else the file name itself."""
    meta: dict = {}
    cj = folder / "captions.json"
    if cj.is_file():
        meta = json.loads(cj.read_text())
        if not isinstance(meta, dict):
            raise ValueError(f"{cj}: expected an object mapping file names to captions")
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES)
    if not files:
        raise ValueError(f"no audio files ({', '.join(AUDIO_SUFFIXES)}) in {folder}")
    for p in files:
        m = meta.get(p.name, meta.get(str(p.relative_to(folder))))
        if isinstance(m, str):
            m = {"caption": m}
        m = dict(m or {})
        if "caption" not in m:
            txt = p.with_suffix(".txt")
            m["caption"] = txt.read_text().strip() if txt.is_file() else p.stem.replace("_", " ")
        yield p, m


def import_folder(
    folder: str | Path, out: str | Path, cfg: RenderConfig, progress: Callable[[int, int], None] | None = None
) -> DatasetWriter:
    """Cut a folder of audio + captions into `cfg.seconds` examples (mono, resampled) with controls."""
    from scipy.signal import resample_poly

    from ..dsp.tempo import estimate_bpm

    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"audio folder not found: {folder}")
    writer = DatasetWriter(out, cfg.sample_rate, cfg.hop)
    items = list(folder_items(folder))
    n = 0
    for k, (path, meta) in enumerate(items):
        audio, sr = sf.read(path, dtype="float32", always_2d=True)
        audio = audio.mean(axis=1)
        if sr != cfg.sample_rate:
            g = np.gcd(sr, cfg.sample_rate)
            audio = resample_poly(audio, cfg.sample_rate // g, sr // g).astype(np.float32)
        bpm = float(meta["bpm"]) if meta.get("bpm") else estimate_bpm(audio, cfg.sample_rate)
        seg = int(cfg.seconds * cfg.sample_rate)
        seg -= seg % cfg.hop
        for start in range(0, max(len(audio) - seg + 1, 1), seg):
            piece = audio[start : start + seg]
            if len(piece) < 4 * cfg.hop:
                continue
            ex_id = f"{n:06d}"
            labels = dict(meta.get("labels", {}))
            labels.setdefault("bpm", bpm)
            frames = len(piece) // cfg.hop
            offset_beats = start / cfg.sample_rate * bpm / 60.0
            bpm_a, beat, bar = beat_grid(frames, cfg.hop, cfg.sample_rate, bpm, 4)
            controls = {
                "bpm": bpm_a,
                "beat_phase": ((beat + offset_beats) % 1.0).astype(np.float32),
                "bar_phase": ((bar + offset_beats / 4) % 1.0).astype(np.float32),
            }
            entry = {
                "id": ex_id,
                "seconds": len(piece) / cfg.sample_rate,
                "split": split_of(n),  # a folder has no style cycle
                "caption": meta["caption"],
                "labels": labels,
                "stems": [],
                "source": f"folder:{path.relative_to(folder)}@{start / cfg.sample_rate:.2f}s",
            }
            if not writer.has(ex_id):
                writer.add(entry, piece.astype(np.float32), None, controls)
            n += 1
        if progress:
            progress(k + 1, len(items))
    writer.flush()
    return writer


SKETCH_KEYS = ("pitch_midi", "voiced", "loudness_db", "centroid_hz", "lead_loudness_db", "lead_centroid_hz")


def add_sketch_controls(data: str | Path, progress: Callable[[int, int], None] | None = None) -> int:
    """Fill in the sketch controls of every example that lacks them (a second, resumable pass)."""
    data = Path(data)
    index = load_index(data)
    sr, hop = index["sample_rate"], index["hop"]
    done = 0
    for k, e in enumerate(index["examples"]):
        path = data / "controls" / f"{e['id']}.npz"
        with np.load(path) as z:
            controls = dict(z)
        if not all(key in controls for key in SKETCH_KEYS):
            mix = sf.read(data / "audio" / f"{e['id']}.wav", dtype="float32")[0]
            lead_path = data / "stems" / e["id"] / "lead.wav"
            lead = sf.read(lead_path, dtype="float32")[0] if lead_path.is_file() else None
            controls.update(frame_controls(mix, lead, sr, hop))
            np.savez(path, **controls)
            done += 1
        if progress:
            progress(k + 1, len(index["examples"]))
    return done


def load_index(data: str | Path) -> dict:
    path = Path(data) / "index.json"
    if not path.is_file():
        raise FileNotFoundError(f"no dataset index at {path} (make one with `lmdm-live train data`)")
    index = json.loads(path.read_text())
    if index.get("format") != FORMAT:
        raise ValueError(f"{path} is not an lmdm dataset index")
    return index
