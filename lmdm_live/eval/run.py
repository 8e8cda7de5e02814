"""`evaluate`: generate long streams from a prompt set and score them window by window.

For each prompt a stream of `seconds` is generated offline through `LMDMStream` (exactly what the live
instrument plays), cut into windows, and each window is judged by the classifier (adherence to the prompt's
labels), by the Fréchet distance of its embeddings to real test-split music, and by its tempo against the
requested bpm. Curves over window index show how a model drifts the longer it plays. A second measurement
switches prompt mid-stream and counts blocks until the new prompt is followed.
"""

from __future__ import annotations

import json
import math
import sys
import warnings
from dataclasses import asdict
from pathlib import Path

import numpy as np

from ..dsp.tempo import estimate_bpm, tempo_error
from ..train.labels import HEADS, head_targets
from .classifier import Classifier, adherence
from .data import load_index, read_mix, resample, split
from .metrics import WindowMetrics, frechet_distance, nanmean, nanmedian, share_within
from .play import EvalConfig, crops, embed, generate, stream_params
from .seams import seam_ratio
from .transitions import measure_transition, splice_transition

# --- prompts --------------------------------------------------------------------------------------------


def default_prompts(index: dict, n: int = 24) -> list[dict]:
    """Up to `n` prompts from the test split's captions, as varied as the split allows, in an order whose
    every prefix is varied too (`--max-prompts` takes one).

    The styles take turns; within a style, its captions are grouped by (lead, tempo bucket, mode) and the
    groups take turns. So the first prompts span the styles before any repeats, then instruments and tempi.
    """
    by_style: dict[str, dict[tuple, list[dict]]] = {}
    for ex in sorted(split(index, "test"), key=lambda e: e["id"]):
        lab = ex.get("labels", {})
        sub = tuple(str(lab.get(k)) for k in ("lead", "tempo_bucket", "mode"))
        by_style.setdefault(str(lab.get("style")), {}).setdefault(sub, []).append(ex)
    queues = [_round_robin([groups[k] for k in sorted(groups)]) for _, groups in sorted(by_style.items())]
    prompts: list[dict] = []
    seen: set[str] = set()
    for depth in range(max((len(q) for q in queues), default=0)):
        for q in queues:
            if depth < len(q) and len(prompts) < n and q[depth]["caption"] not in seen:
                ex = q[depth]
                seen.add(ex["caption"])
                prompts.append(
                    {
                        "prompt": ex["caption"],
                        "labels": ex["labels"],
                        "bpm": ex["labels"].get("bpm"),
                        "id": ex["id"],  # its real render: the instant-switch reference of a transition
                    }
                )
    return prompts


def _round_robin(groups: list[list[dict]]) -> list[dict]:
    """The groups' first members, then their second members, ..."""
    return [g[i] for i in range(max((len(g) for g in groups), default=0)) for g in groups if i < len(g)]


def judged_by(index: dict, clf: Classifier) -> tuple[dict, int]:
    """The index with only the test examples whose labels `clf` learnt (a classifier trained before a
    style was added never names it, so a prompt of that style would score as a miss whatever played)."""
    kept = [ex for ex in index["examples"] if ex["split"] != "test" or clf.can_judge(ex.get("labels", {}))]
    return {**index, "examples": kept}, len(index["examples"]) - len(kept)


def load_prompts(path: str | Path) -> list[dict]:
    """A JSON list of {"prompt": caption, "labels": {...}, "bpm": ...}, checked."""
    items = json.loads(Path(path).read_text())
    if not isinstance(items, list) or not items:
        raise ValueError(f"{path}: expected a non-empty JSON list of prompts")
    out = []
    for i, p in enumerate(items):
        if not isinstance(p, dict) or not isinstance(p.get("prompt"), str):
            raise ValueError(f"{path}: item {i} needs a 'prompt' string")
        labels = dict(p.get("labels") or {})
        bpm = p.get("bpm", labels.get("bpm"))
        if bpm is not None:
            labels.setdefault("bpm", float(bpm))
        head_targets(labels)  # unknown label values fail here, not after an hour of generation
        out.append({"prompt": p["prompt"], "labels": labels, "bpm": None if bpm is None else float(bpm)})
    return out


# --- the real reference ---------------------------------------------------------------------------------


def real_reference(clf: Classifier, data_dir: str | Path, index: dict, cfg: EvalConfig) -> dict:
    """Embeddings of the real test split (FD's reference) and what the classifier scores on real music:
    adherence of real windows to their own captions, and the FD between two halves of the split (a floor
    no model can beat by much)."""
    sr = clf.cfg.sample_rate
    embs, scores, audio_by_id = [], [], {}
    for ex in split(index, "test"):
        audio = audio_by_id[ex["id"]] = read_mix(data_dir, ex, sr)
        embs.append(embed(clf, crops(audio, sr, cfg.fd_crop, cfg.fd_hop), sr))
        window = min(cfg.window, len(audio) / sr)
        for pred in clf.predict(crops(audio, sr, window, window), sr):
            scores.append(adherence(pred, ex.get("labels", {}))["mean"])
    if not embs:
        raise ValueError(f"{data_dir}: the test split is empty; FD needs real test-split music")
    floor = float("nan")
    if len(embs) >= 4:
        floor = frechet_distance(np.concatenate(embs[0::2]), np.concatenate(embs[1::2]))
    return {
        "embeddings": np.concatenate(embs),
        "adherence": nanmean(scores),
        "fd_floor": floor,
        "audio": audio_by_id,
    }


# --- one model ------------------------------------------------------------------------------------------


def score_stream(clf: Classifier, audio: np.ndarray, rate: int, prompt: dict, cfg: EvalConfig):
    """Window metrics of one stream and the FD-crop embeddings of each window."""
    sr = clf.cfg.sample_rate
    audio = resample(audio, rate, sr)
    wlen = min(int(round(cfg.window * sr)), len(audio))
    starts = range(0, len(audio) - wlen + 1, wlen)
    windows = np.stack([audio[s : s + wlen] for s in starts])
    preds = clf.predict(windows, sr)
    out, embs = [], []
    for s, w, pred in zip(starts, windows, preds):
        a = adherence(pred, prompt["labels"])
        m = WindowMetrics(s / sr, (s + wlen) / sr, a["mean"], a["heads"], a["soft"], a["families_f1"])
        if prompt.get("bpm"):
            m.bpm = estimate_bpm(w, sr)
            m.tempo_error = tempo_error(m.bpm, prompt["bpm"])
            m.tempo_error_octave = tempo_error(m.bpm, prompt["bpm"], octave=True)
        out.append(m)
        embs.append(embed(clf, crops(w, sr, cfg.fd_crop, cfg.fd_hop), sr))
    return out, embs


def evaluate_model(
    model, text, clf: Classifier, prompts: list[dict], real: dict, cfg: EvalConfig, progress=None
):
    """Every prompt's stream scored per window; per-window aggregates over prompts; transitions; summary."""
    blocks = max(1, math.ceil(cfg.seconds / model.block_seconds))
    half = cfg.switch_block(model.block_seconds)
    pairs = [(prompts[i], prompts[(i + len(prompts) // 2) % len(prompts)]) for i in range(len(prompts))]
    pairs = [(a, b) for a, b in pairs if a["prompt"] != b["prompt"]][: cfg.transitions]
    tick = progress(len(prompts) * blocks + len(pairs) * 2 * half) if progress else None
    per_prompt, window_embs = [], []
    for k, prompt in enumerate(prompts):
        audio = generate(model, text, stream_params(prompt, cfg, model), blocks, cfg.seed + k, tick=tick)
        wins, embs = score_stream(clf, audio, model.sample_rate, prompt, cfg)
        seams = seam_ratio(audio, model.sample_rate, model.block_seconds)
        per_prompt.append({**prompt, "windows": [w.to_dict() for w in wins], "seam_ratio": seams, "_w": wins})
        window_embs.append(embs)
    n_windows = min(len(p["_w"]) for p in per_prompt)
    windows = []
    for w in range(n_windows):
        ms = [p["_w"][w] for p in per_prompt]
        fd = frechet_distance(np.concatenate([e[w] for e in window_embs]), real["embeddings"])
        windows.append(
            {
                "index": w,
                "start": ms[0].start,
                "end": ms[0].end,
                "adherence": nanmean(m.adherence for m in ms),
                "heads": {h: nanmean(m.heads.get(h) for m in ms) for h in HEADS},
                "adherence_soft": nanmean(m.adherence_soft for m in ms),
                "families_f1": nanmean(m.families_f1 for m in ms),
                "fd": fd,
                "tempo_error": nanmean(m.tempo_error for m in ms),
                "tempo_error_median": nanmedian([m.tempo_error for m in ms]),
                "tempo_error_octave": nanmean(m.tempo_error_octave for m in ms),
            }
        )
    errors = [m.tempo_error for p in per_prompt for m in p["_w"]]
    for p in per_prompt:
        del p["_w"]
    transitions = []
    for a, b in pairs:
        t = measure_transition(model, text, clf, a, b, cfg.seed, cfg, tick)
        splice = splice_transition(model, clf, real.get("audio", {}), a, b, cfg)
        for key in ("", "_ahead"):
            t[f"splice_blocks{key}"] = None if splice is None else splice[f"blocks{key}"]
            if t[f"blocks{key}"] is not None and t[f"splice_blocks{key}"] is not None:
                t[f"lag_blocks{key}"] = t[f"blocks{key}"] - t[f"splice_blocks{key}"]
        transitions.append(t)
    # the real test renders laid on this model's block grid: the ratio music with no seams has
    real_seams = [
        seam_ratio(a, clf.cfg.sample_rate, model.block_seconds) for a in real.get("audio", {}).values()
    ]
    summary = _summary(windows, transitions, errors)
    summary["seam_flux_ratio"] = nanmean(p["seam_ratio"] for p in per_prompt)
    summary["seam_flux_ratio_real"] = nanmean(real_seams)
    return {
        "model": model.name,
        "block_seconds": model.block_seconds,
        "summary": summary,
        "windows": [_clean(w) for w in windows],
        "prompts": [_clean(p) for p in per_prompt],
        "transitions": [_clean(t) for t in transitions],
    }


def _summary(windows: list[dict], transitions: list[dict], tempo_errors: list[float]) -> dict:
    """`tempo_errors`: every prompt's every window (the median and the share within 5 % are over these; a few
    streams at a related rate, e.g. 2/3 of the asked one, pull the mean far from the typical stream). The
    median is over the windows with an estimate; the share counts a window with none as a miss."""
    first, last = windows[0], windows[-1]
    timed = [t["blocks"] for t in transitions if t["blocks"] is not None]
    return {
        "adherence": nanmean(w["adherence"] for w in windows),
        "adherence_first": first["adherence"],
        "adherence_last": last["adherence"],
        "heads": {h: nanmean(w["heads"][h] for w in windows) for h in HEADS},
        "fd": nanmean(w["fd"] for w in windows),
        "fd_first": first["fd"],
        "fd_last": last["fd"],
        "tempo_error": nanmean(w["tempo_error"] for w in windows),
        "tempo_error_median": nanmedian(tempo_errors),
        "tempo_within_5pct": share_within(tempo_errors),
        "tempo_windows_unestimated": sum(e is None or not np.isfinite(e) for e in tempo_errors),
        "tempo_error_octave": nanmean(w["tempo_error_octave"] for w in windows),
        "transition_blocks": nanmean(timed),
        "transitions_timed": f"{len(timed)}/{len(transitions)}",
        # the same measurement on instant splices of real renders, and the model's count beyond it
        "transition_splice_blocks": nanmean(t.get("splice_blocks") for t in transitions),
        "transition_lag_blocks": nanmean(t.get("lag_blocks") for t in transitions),
        # timed by the window ahead of each block: the block the music has changed by (instant: 1)
        "transition_blocks_ahead": nanmean(t.get("blocks_ahead") for t in transitions),
        "transition_blocks_ahead_max": max(
            (t["blocks_ahead"] for t in transitions if t.get("blocks_ahead") is not None), default=None
        ),
        "transitions_timed_ahead": f"{sum(t.get('blocks_ahead') is not None for t in transitions)}/{len(transitions)}",
        "transition_splice_blocks_ahead": nanmean(t.get("splice_blocks_ahead") for t in transitions),
        # adherence to the new prompt over the second half after a switch, and over-saturation after it
        "transition_steady": nanmean(t.get("steady") for t in transitions),
        "transition_peak_after": nanmean(t.get("peak_after") for t in transitions),
        "transition_peak_before": nanmean(t.get("peak_before") for t in transitions),
        "transition_flatness_after": nanmean(t.get("flatness_after") for t in transitions),
        "transition_flatness_before": nanmean(t.get("flatness_before") for t in transitions),
    }


def _clean(v):
    """JSON-ready: NaN -> null, numpy scalars -> Python, floats rounded."""
    if isinstance(v, dict):
        return {k: _clean(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_clean(x) for x in v]
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float):
        return None if not math.isfinite(v) else round(v, 6)
    return v


# --- the whole evaluation -------------------------------------------------------------------------------


def evaluate(
    model_ref: str,
    classifier_dir: str | Path,
    data_dir: str | Path,
    out_dir: str | Path,
    cfg: EvalConfig | None = None,
    prompts_file: str | Path | None = None,
    compare: str | None = None,
    label: str | None = None,
    compare_label: str | None = None,
    device: str = "cpu",
    t5: str | None = None,
    progress=None,
    dtype: str = "float32",
) -> dict:
    """Evaluate one model (and optionally a second on the same prompts and seeds); write metrics.json and
    metrics.png into `out_dir`. `progress(name)` returns a factory `(total) -> tick`, for progress bars."""
    cfg = cfg or EvalConfig()
    clf = Classifier.load(classifier_dir)
    index, unjudged = judged_by(load_index(data_dir), clf)
    if unjudged:
        print(
            f"eval: {unjudged} test examples name a class the classifier never learnt; "
            "they are left out of the prompts and the real reference",
            file=sys.stderr,
        )
    prompts = load_prompts(prompts_file) if prompts_file else default_prompts(index)
    if cfg.max_prompts:
        prompts = prompts[: cfg.max_prompts]
    if not prompts:
        raise ValueError("no prompts: the test split has no captions and no --prompts file was given")
    real = real_reference(clf, data_dir, index, cfg)
    runs = [(model_ref, label or Path(model_ref).stem)]
    if compare:
        runs.append((compare, compare_label or Path(compare).stem))
    if len(runs) == 2 and runs[0][1] == runs[1][1]:
        runs = [(runs[0][0], runs[0][1] + " (1)"), (runs[1][0], runs[1][1] + " (2)")]
    from ..model.bundle import load_model
    from ..model.precision import resolve_dtype

    results = []
    for ref, name in runs:
        # a preset or a file in the window it was saved with; `dtype` is the DiT's, so it is judged as played
        model = load_model(ref, None, device, resolve_dtype(dtype, device))
        text = model.text_encoder(t5)
        res = evaluate_model(model, text, clf, prompts, real, cfg, progress(name) if progress else None)
        results.append({"label": name, "ref": str(ref), **res})
    metrics = {
        "format": "lmdm-eval",
        "version": 1,
        "config": asdict(cfg),
        "data": str(data_dir),
        "classifier": str(classifier_dir),
        "dtype": dtype,
        "prompts": len(prompts),
        "real": {"adherence": real["adherence"], "fd_floor": real["fd_floor"]},
        "models": results,
    }
    metrics = _clean(metrics)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1) + "\n")
    plot(metrics, out / "metrics.png")
    return metrics


def plot(metrics: dict, path: str | Path) -> None:
    """Adherence, FD and tempo error per window over stream time, and adherence after a prompt switch;
    one curve per model, the real-music level dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(11, 7))
    (ax_a, ax_f), (ax_t, ax_s) = axes
    real = metrics["real"]

    def val(x):
        return np.nan if x is None else x

    for m in metrics["models"]:
        t = [(w["start"] + w["end"]) / 2 for w in m["windows"]]
        ax_a.plot(t, [val(w["adherence"]) for w in m["windows"]], marker="o", label=m["label"])
        ax_f.plot(t, [val(w["fd"]) for w in m["windows"]], marker="o", label=m["label"])
        ax_t.plot(t, [val(w["tempo_error_median"]) for w in m["windows"]], marker="o", label=m["label"])
        curves = [tr["adherence_new"] for tr in m["transitions"]]
        if curves:
            n = min(len(c) for c in curves)
            sw = m["transitions"][0]["switch_block"]
            x = (np.arange(n) + 1 - sw) * m["block_seconds"]
            with warnings.catch_warnings():  # columns before the first whole window are all NaN
                warnings.simplefilter("ignore", RuntimeWarning)
                mean = np.nanmean([[val(v) for v in c[:n]] for c in curves], axis=0)
            ax_s.plot(x, mean, label=m["label"])
    if real.get("adherence") is not None:
        ax_a.axhline(real["adherence"], ls="--", c="grey", label="real test music")
    if real.get("fd_floor") is not None:
        ax_f.axhline(real["fd_floor"], ls="--", c="grey", label="real vs real")
    ax_s.axvline(0, ls=":", c="grey")
    for ax, title, ylabel in (
        (ax_a, "prompt adherence per window", "adherence (mean over heads)"),
        (ax_f, "Fréchet distance to real test music", "FD"),
        (ax_t, "tempo error per window (median over prompts)", "|bpm - requested| / requested"),
        (ax_s, "after a prompt switch", "P(new prompt's classes)"),
    ):
        ax.set_title(title, fontsize=10)
        ax.set_ylabel(ylabel, fontsize=9)
        ax.set_xlabel("seconds since switch" if ax is ax_s else "stream time (s)", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(str(path), dpi=100)
    plt.close(fig)
