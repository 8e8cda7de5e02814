"""Evaluation: tempo, Fréchet distance, the label classifier and `eval model`, on a synthetic dataset.

The dataset is numpy-synthesised in the training-data format (index.json + audio/<id>.wav): each lead
family has its own timbre, each style its own drum pattern, chords are major or minor triads and every
clip has onsets on its beat, so a working classifier must get every head right on held-out clips.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from lmdm_live.train.labels import tempo_bucket

SR = 16000
CLIP_SECONDS = 8.0
SYNTH_STYLES = ("techno", "hiphop", "rock", "ambient")
SYNTH_LEADS = ("piano", "organ", "synth_lead", "reed")
KEYS = {"C": 0, "E": 4, "G": 7}
BPMS = {"slow": (72, 88), "mid": (100, 118), "fast": (132, 165)}


def _note(freq: float, seconds: float, family: str, rng: np.random.Generator) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    if family == "piano":  # struck: all harmonics, fast decay
        partials, env = [(k, 1 / k) for k in range(1, 9)], np.exp(-t / 0.25)
    elif family == "organ":  # drawbars: octaves and fifths, flat sustain
        partials, env = [(1, 1), (2, 0.8), (3, 0.6), (4, 0.6), (8, 0.4)], np.ones_like(t)
    elif family == "synth_lead":  # sawtooth with a fast tremolo
        partials, env = [(k, 1 / k) for k in range(1, 16)], 0.6 + 0.4 * np.sin(2 * np.pi * 7 * t)
    else:  # reed: odd harmonics, slow attack
        partials, env = [(k, 1 / k) for k in (1, 3, 5, 7, 9)], np.minimum(t / 0.06, 1.0)
    env = env * np.minimum(1.0, (seconds - t) / 0.01)
    x = sum(
        a * np.sin(2 * np.pi * freq * k * t + rng.uniform(0, 6.3)) for k, a in partials if freq * k < SR / 2
    )
    return (x * env).astype(np.float32)


def _hit(kind: str, rng: np.random.Generator) -> np.ndarray:
    if kind == "kick":
        t = np.arange(int(0.15 * SR)) / SR
        return np.sin(2 * np.pi * np.cumsum(50 + 70 * np.exp(-t / 0.03)) / SR) * np.exp(-t / 0.05) * 1.5
    n = int((0.12 if kind == "snare" else 0.03) * SR)
    noise = rng.standard_normal(n)
    if kind == "hat":
        noise = np.diff(noise, prepend=0.0)  # brighter
    return noise * np.exp(-np.arange(n) / (0.3 * n)) * (0.6 if kind == "snare" else 0.3)


def synth_clip(style: str, lead: str, bpm: float, mode: str, key: str, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    n = int(CLIP_SECONDS * SR)
    out = np.zeros(n + SR, np.float32)
    beat = 60.0 / bpm
    root = 261.63 * 2 ** (KEYS[key] / 12)
    triad = (0, 3 if mode == "minor" else 4, 7)
    for i, semis in enumerate(triad):  # the chord, sustained underneath
        out[:n] += 0.15 * _note(root / 2 * 2 ** (semis / 12), CLIP_SECONDS, "organ", rng)[:n] / (1 + i)
    arpeggio = (*triad, 12)
    for b in range(int(CLIP_SECONDS / beat) + 1):
        start = int(b * beat * SR)
        if start >= n:
            break
        note = _note(root * 2 ** (arpeggio[b % 4] / 12), beat * 0.95, lead, rng) * 0.35
        out[start : start + len(note)] += note[: len(out) - start]
        hits = []
        if style == "techno":
            hits = [("kick", 0.0), ("hat", 0.5)]
        elif style in ("hiphop", "rock"):
            hits = [("kick" if b % 2 == 0 else "snare", 0.0)]
            if style == "rock":
                hits += [("hat", 0.0), ("hat", 0.5)]
        for kind, offset in hits:
            s = start + int(offset * beat * SR)
            h = _hit(kind, rng)
            out[s : s + len(h)] += h[: max(0, len(out) - s)]
    out = out[:n] + 0.003 * rng.standard_normal(n).astype(np.float32)
    return (0.5 * out / np.abs(out).max()).astype(np.float32)


def build_dataset(root: Path, counts: dict[str, int], seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    (root / "audio").mkdir(parents=True, exist_ok=True)
    examples = []
    for split_name, count in counts.items():
        for _ in range(count):
            i = len(examples)
            style, lead = SYNTH_STYLES[i % 4], SYNTH_LEADS[(i // 4) % 4]  # every pairing, in turn
            bucket = ("slow", "mid", "fast")[int(rng.integers(3))]
            bpm = float(rng.integers(*BPMS[bucket]))
            mode, key = ("major", "minor")[int(rng.integers(2))], str(rng.choice(list(KEYS)))
            assert tempo_bucket(bpm) == bucket
            ex_id = f"{i:06d}"
            sf.write(str(root / "audio" / f"{ex_id}.wav"), synth_clip(style, lead, bpm, mode, key, i), SR)
            families = [lead, "synth_pad"] + ([] if style == "ambient" else ["drums"])
            examples.append(
                {
                    "id": ex_id,
                    "seconds": CLIP_SECONDS,
                    "split": split_name,
                    "caption": f"{bucket} {style} with {lead.replace('_', ' ')} in {key} {mode}, {bpm:.0f} bpm",
                    "labels": {
                        "style": style,
                        "families": families,
                        "lead": lead,
                        "tempo_bucket": bucket,
                        "mode": mode,
                        "key": key,
                        "bpm": bpm,
                    },
                    "source": "procedural",
                }
            )
    index = {"format": "lmdm-dataset", "version": 1, "sample_rate": SR, "hop": 512, "examples": examples}
    (root / "index.json").write_text(json.dumps(index, indent=1))
    return root


def click_track(bpm: float, seconds: float = 12.0, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = 0.01 * rng.standard_normal(int(seconds * SR))
    t = 0.1
    while t < seconds - 0.05:
        i, n = int(t * SR), int(0.02 * SR)
        x[i : i + n] += rng.standard_normal(n) * np.exp(-np.arange(n) / (0.004 * SR))
        t += 60.0 / bpm
    return x.astype(np.float32)


# --- tempo and FD ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("bpm", [80.0, 120.0, 170.0])
def test_tempo_of_click_tracks_within_2_percent(bpm):
    from lmdm_live.dsp.tempo import estimate_bpm, tempo_error

    est = estimate_bpm(click_track(bpm), SR)
    assert tempo_error(est, bpm) < 0.02, est


@pytest.mark.parametrize("style", ["techno", "house", "rock"])
def test_tempo_of_rendered_straight_beats(style):
    """The training renderer's own four-on-the-floor and rock beats (FluidSynth, the GM soundfont), whose
    off-beat eighths once pushed the estimate to 2/3 of the tempo (a period of three eighths)."""
    import random

    from lmdm_live.dsp.tempo import estimate_bpm, tempo_error
    from lmdm_live.train.music import procedural_piece
    from lmdm_live.train.synth import StemSynth, render_piece

    synth = StemSynth(SR)
    for seed in range(2):
        piece = procedural_piece(style, random.Random(seed), 10.0)
        mix = np.sum(list(render_piece(synth, piece).values()), axis=0)
        est = estimate_bpm(mix, SR)
        assert tempo_error(est, piece.bpm) < 0.02, (style, seed, piece.bpm, est)


def test_tempo_error_and_octaves():
    from lmdm_live.dsp.tempo import estimate_bpm, tempo_error

    assert tempo_error(132.0, 120.0) == pytest.approx(0.1)
    assert tempo_error(60.0, 120.0) == pytest.approx(0.5)
    assert tempo_error(60.0, 120.0, octave=True) == 0.0
    assert np.isnan(estimate_bpm(np.zeros(SR * 4, np.float32), SR))


def test_share_within_counts_a_window_without_an_estimate_as_a_miss():
    from lmdm_live.eval.metrics import share_within

    assert share_within([0.01, 0.05, 0.2, None, float("nan")]) == pytest.approx(0.4)
    assert share_within([0.0, 0.049]) == 1.0 and np.isnan(share_within([]))


def test_frechet_distance_is_zero_for_a_set_vs_itself_and_grows_with_a_shift():
    from lmdm_live.eval.metrics import frechet_distance

    rng = np.random.default_rng(0)
    a = rng.standard_normal((300, 16)) @ rng.standard_normal((16, 16))
    assert frechet_distance(a, a) < 1e-3
    fds = [frechet_distance(a, a + s) for s in (0.5, 1.0, 2.0)]
    assert fds[0] < fds[1] < fds[2]
    assert fds[1] == pytest.approx(16.0, rel=0.01)  # |shift|^2 = 16 dims x 1.0^2
    # fewer vectors than dimensions: still finite, and still ~0 against itself
    small = rng.standard_normal((5, 32))
    assert 0.0 <= frechet_distance(small, small) < 1e-3
    assert np.isfinite(frechet_distance(small, rng.standard_normal((7, 32))))


def test_log_mel_shape_and_gain():
    from lmdm_live.dsp.features import MelConfig, log_mel

    cfg = MelConfig()
    x = click_track(120.0, seconds=2.0)
    m = log_mel(x, cfg)
    assert m.shape == (cfg.n_mels, 1 + len(x) // cfg.hop)
    # 20 dB louder is +20 dB in every band above the floor
    assert np.allclose((log_mel(10 * x, cfg) - m).numpy()[m.numpy() > m.max().item() - 60], 20.0, atol=1e-2)


def test_chroma_names_the_pitch_classes_of_a_chord_and_lines_up_with_the_log_mel():
    from lmdm_live.dsp.features import ChromaConfig, chroma, log_mel

    t = np.arange(2 * SR) / SR
    c_major = sum(np.sin(2 * np.pi * 440.0 * 2 ** ((m - 69) / 12) * t) for m in (48, 64, 67, 72))
    c = chroma(c_major.astype(np.float32), ChromaConfig())
    assert c.shape == (2, 12, log_mel(c_major).shape[-1])
    bass, upper = c.mean(-1).numpy()
    assert int(bass.argmax()) == 0  # C3 in the bass band
    assert set(np.argsort(upper)[-3:]) == {0, 4, 7}  # C, E, G above it
    assert 0.0 <= float(c.min()) and float(c.max()) <= 1.0 + 1e-6
    # loudness does not change it
    assert np.allclose(chroma(0.1 * c_major.astype(np.float32)).numpy(), c.numpy(), atol=2e-3)


def test_pitch_class_branch_is_transposition_invariant():
    import torch

    from lmdm_live.eval.classifier import ChromaBranch

    torch.manual_seed(0)
    branch = ChromaBranch(2, 8).eval()
    c = torch.rand(3, 2, 12, 40)
    out = branch(c)
    for k in (1, 5, 11):
        assert torch.allclose(branch(torch.roll(c, k, dims=2)), out, atol=1e-5)
    assert not torch.allclose(branch(torch.flip(c, dims=[2])), out, atol=1e-3)  # not blind to intervals


def test_version_1_checkpoints_still_load(tmp_path):
    from dataclasses import asdict

    import torch

    from lmdm_live.eval.classifier import MODEL_FILE, Classifier, ClassifierConfig, LabelNet
    from lmdm_live.model.checkpoint import save_checkpoint
    from lmdm_live.train.labels import FAMILIES, HEADS

    cfg = ClassifierConfig(channels=(4, 4, 4, 4), chroma_channels=0, pool="meanmax", balance=False)
    old = {k: v for k, v in asdict(cfg).items() if k not in ("chroma_channels", "pool", "balance")}
    config = {"format": "lmdm-eval-classifier", "version": 1, "step": 0, "config": old}
    config["vocab"] = {**{k: list(v) for k, v in HEADS.items()}, "families": list(FAMILIES)}
    torch.manual_seed(0)
    net = LabelNet(cfg)
    save_checkpoint(tmp_path / MODEL_FILE, net.state_dict(), config)
    clf = Classifier.load(tmp_path)
    assert clf.cfg.chroma_channels == 0 and clf.cfg.pool == "meanmax" and clf.net.pitch is None
    pred = clf.predict(click_track(120.0, seconds=2.0), SR)[0]
    assert set(pred.labels) == set(HEADS)


# --- the classifier on a synthetic dataset -------------------------------------------------------------


TEST_CLF = dict(channels=(8, 16, 32, 64), crop_max=4.0, lr=3e-3, batch=12)
TRAIN_STEPS = 120


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return build_dataset(tmp_path_factory.mktemp("synth"), {"train": 8, "valid": 64, "test": 24})


@pytest.fixture(scope="module")
def classifier_dir(dataset, tmp_path_factory) -> Path:
    from lmdm_live.eval.classifier import ClassifierConfig, ClassifierTrainer, MelBank

    out = tmp_path_factory.mktemp("clf")
    trainer = ClassifierTrainer(ClassifierConfig(**TEST_CLF))
    bank = MelBank.from_dataset(dataset, "valid", trainer.cfg)
    while trainer.step < TRAIN_STEPS:
        trainer.train_step(bank)
    trainer.save(out)
    return out


def test_classifier_is_near_perfect_on_held_out_synthetic_renders(dataset, classifier_dir):
    from lmdm_live.eval.classifier import Classifier, test_report

    report = test_report(Classifier.load(classifier_dir), dataset, windows=(8.0, 4.0))
    print(json.dumps(report))
    for r in report.values():
        assert r["adherence"] >= 0.9, report
        assert min(r["accuracy"].values()) >= 0.8, report
        assert r["families_f1"] >= 0.9, report


def test_classifier_trains_on_valid_only_and_resumes_exactly(dataset, tmp_path):
    import torch

    from lmdm_live.eval.classifier import ClassifierConfig, ClassifierTrainer, MelBank

    cfg = ClassifierConfig(channels=(4, 4, 4, 4), crop_max=2.0, batch=4, seed=3)
    bank = MelBank.from_dataset(dataset, "valid", cfg)
    assert len(bank.mels) == 64  # the generator's train split (8 clips) is not in it
    straight = ClassifierTrainer(cfg)
    for _ in range(4):
        straight.train_step(bank)
    first = ClassifierTrainer(cfg)
    for _ in range(2):
        first.train_step(bank)
    first.save(tmp_path)
    resumed = ClassifierTrainer.resume(tmp_path)
    assert resumed.step == 2
    for _ in range(2):
        resumed.train_step(bank)
    for (k, a), b in zip(straight.net.state_dict().items(), resumed.net.state_dict().values()):
        assert torch.equal(a, b), k
    assert resumed.history == straight.history


def test_codec_round_trip_doubles_the_bank_and_is_reported_apart(dataset, classifier_dir, tmp_path, capsys):
    """--codec: each valid clip is also learnt as it sounds through an LMDM file's autoencoder, and the test
    split through it is reported next to the renders (a random autoencoder wrecks what the classifier hears)."""
    import torch

    from lmdm_live.cli import main
    from lmdm_live.eval.classifier import ClassifierConfig, MelBank
    from lmdm_live.eval.data import CodecRoundTrip
    from lmdm_live.model.bundle import LMDMModel
    from lmdm_live.model.oobleck import OobleckConfig, OobleckVAE

    torch.manual_seed(0)
    tiny = LMDMModel.preset("tiny")  # with a small random 16 kHz autoencoder: quick to run 88 clips through
    cfg = OobleckConfig(
        in_channels=1, out_channels=1, channels=4, c_mults=(1, 2), strides=(2, 4), latent_dim=64
    )
    tiny.vae, tiny.sample_rate = OobleckVAE(cfg).eval(), SR
    tiny.save(tmp_path / "tiny.safetensors")
    codec = CodecRoundTrip(tmp_path / "tiny.safetensors")
    cfg = ClassifierConfig(**TEST_CLF)
    # a few clips (each costs 0.4 s through the codec): the bank's layout, then the CLI's report on 8 test
    # clips of another directory (--test-data: a classifier's own data has no test split)
    few = build_dataset(tmp_path / "few", {"valid": 4})
    judged = build_dataset(tmp_path / "judged", {"test": 8}, seed=1)
    bank = MelBank.from_dataset(few, "valid", cfg, codec=codec)
    assert len(bank.mels) == 8 and bank.ids[4:] == [i + "~codec" for i in bank.ids[:4]]
    assert torch.equal(bank.targets["style"][:4], bank.targets["style"][4:])
    assert bank.mels[0].shape == bank.mels[4].shape and not torch.allclose(bank.mels[0], bank.mels[4])

    import shutil

    clf = tmp_path / "clf"
    shutil.copytree(classifier_dir, clf)
    args = ["eval", "classifier", "--data", str(few), "--out", str(clf), "--steps", str(TRAIN_STEPS + 1)]
    args += ["--test-data", str(judged)]
    assert main([*args, "--codec", str(tmp_path / "tiny.safetensors")]) == 0
    assert "through the codec" in capsys.readouterr().out
    report = json.loads((clf / "test_report.json").read_text())
    assert report["codec"] == str(tmp_path / "tiny.safetensors") and report["test_data"] == str(judged)
    assert report["through_codec"]["10s"]["adherence"] < report["10s"]["adherence"] - 0.2, report
    assert json.loads((clf / "progress.json").read_text())["codec"] == report["codec"]


def test_adherence_per_head():
    from lmdm_live.eval.classifier import Prediction, adherence
    from lmdm_live.train.labels import HEADS

    probs = {h: np.eye(len(v))[0] for h, v in HEADS.items()}
    pred = Prediction(
        {"style": "techno", "tempo_bucket": "slow", "mode": "major", "lead": "piano"}, ("piano",), probs
    )
    a = adherence(
        pred, {"style": "techno", "bpm": 128.0, "mode": "major", "lead": "piano", "families": ["piano"]}
    )
    assert a["heads"] == {"style": 1.0, "mode": 1.0, "lead": 1.0, "tempo_bucket": 0.0}  # 128 bpm is fast
    assert a["mean"] == 0.75 and a["families_f1"] == 1.0


def test_default_prompts_vary(dataset):
    from lmdm_live.eval.data import load_index
    from lmdm_live.eval.run import default_prompts

    prompts = default_prompts(load_index(dataset))
    assert len(prompts) >= 20
    assert len({p["prompt"] for p in prompts}) == len(prompts)
    assert len({p["labels"]["style"] for p in prompts}) == len(SYNTH_STYLES)
    assert len({p["labels"]["lead"] for p in prompts}) == len(SYNTH_LEADS)
    assert len({p["labels"]["tempo_bucket"] for p in prompts}) == 3
    # every prefix is varied: the first prompts are one of each style (`--max-prompts` takes a prefix)
    first = [p["labels"]["style"] for p in prompts[: len(SYNTH_STYLES)]]
    assert sorted(first) == sorted(SYNTH_STYLES)


# --- end to end -----------------------------------------------------------------------------------------


def test_an_instant_switch_still_counts_the_measurements_window(dataset, classifier_dir):
    """The transition timer looks back over a 2 s window, so a splice that switches in no time counts a few
    blocks (at most the window's length), and a splice of a clip with itself shows no switch to time."""
    from lmdm_live.eval.classifier import Classifier
    from lmdm_live.eval.data import load_index, read_mix
    from lmdm_live.eval.play import EvalConfig
    from lmdm_live.eval.run import default_prompts
    from lmdm_live.eval.transitions import time_switch

    clf = Classifier.load(classifier_dir)
    index = load_index(dataset)
    prompts = default_prompts(index)
    by_id = {e["id"]: e for e in index["examples"]}
    a = next(p for p in prompts if p["labels"]["style"] == "techno")
    b = next(p for p in prompts if p["labels"]["style"] == "ambient")
    xa, xb = (read_mix(dataset, by_id[p["id"]], SR) for p in (a, b))
    bs, half = 0.25, 24  # 6 s a side, in quarter-second blocks: the 2 s window spans 8 of them
    seg = int(half * bs * SR)
    cfg = EvalConfig(short_window=2.0)
    switch = time_switch(clf, np.concatenate([xa[:seg], xb[:seg]]), SR, bs, half, a, b, cfg)
    assert switch["steady"] - switch["before"] > 0.3
    assert 2 <= switch["blocks"] <= 8  # instant, yet counted: the window's own lag
    # the window ahead of each block sees the new clip whole from the switch block on
    assert switch["steady_ahead"] - switch["before_ahead"] > 0.3
    assert switch["blocks_ahead"] in (1, 2) and switch["blocks_ahead"] < switch["blocks"]
    same = time_switch(clf, np.concatenate([xb[:seg], xb[:seg]]), SR, bs, half, b, b, cfg)
    assert same["blocks"] is None and same["blocks_ahead"] is None


def tiny_model_file(path: Path) -> Path:
    """The tiny preset with an autoencoder a quarter as wide, saved: its decoder was most of each block's
    time, and the evaluation's plumbing is the same whatever the weights."""
    import torch

    from lmdm_live.model.bundle import LMDMModel
    from lmdm_live.model.oobleck import OobleckConfig, OobleckVAE

    model = LMDMModel.preset("tiny", seed=0)
    torch.manual_seed(0)
    model.vae = OobleckVAE(OobleckConfig.small(audio_channels=model.vae.cfg.in_channels, channels=8)).eval()
    model.save(path)
    return path


def test_eval_cli_end_to_end_on_a_tiny_model(dataset, classifier_dir, tmp_path, capsys):
    from lmdm_live.cli import main

    out = tmp_path / "eval"
    tiny = str(tiny_model_file(tmp_path / "tiny.safetensors"))
    # the classifier resumes for a few steps through the CLI, then prints its test report
    assert (
        main(
            [
                "eval",
                "classifier",
                "--data",
                str(dataset),
                "--out",
                str(classifier_dir),
                "--steps",
                str(TRAIN_STEPS + 2),
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "adherence" in printed and "style" in printed
    args = ["eval", "model", "--model", tiny, "--label", "tiny", "--classifier", str(classifier_dir)]
    args += ["--data", str(dataset)]
    args += ["--out", str(out), "--seconds", "4.5", "--window", "2", "--max-prompts", "2", "--steps", "1"]
    args += [
        "--transitions",
        "1",
        "--transition-seconds",
        "4.5",
        "--compare",
        tiny,
        "--compare-label",
        "again",
    ]
    assert main(args) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert [m["label"] for m in metrics["models"]] == ["tiny", "again"]
    m = metrics["models"][0]
    assert len(m["windows"]) == 2 and len(m["prompts"]) == 2
    w = m["windows"][0]
    assert 0.0 <= w["adherence"] <= 1.0 and w["fd"] >= 0.0
    assert set(w["heads"]) == {"style", "tempo_bucket", "mode", "lead"}
    assert len(m["prompts"][0]["windows"]) == 2 and "tempo_error" in m["prompts"][0]["windows"][0]
    assert len(m["transitions"]) == 1 and len(m["transitions"][0]["adherence_new"]) == 6
    splice = m["transitions"][0]["splice_blocks"]  # the instant-switch floor, on the test split's renders
    assert splice is None or 1 <= splice <= 3
    assert "transition_splice_blocks" in m["summary"] and "transition_lag_blocks" in m["summary"]
    assert "transition_blocks_ahead" in m["summary"] and "transition_splice_blocks_ahead" in m["summary"]
    every = [w["tempo_error"] for p in m["prompts"] for w in p["windows"]]
    errors = [e for e in every if e is not None]
    # the median is over every prompt's every window with an estimate; the share counts one without as a miss
    assert m["summary"]["tempo_windows_unestimated"] == len(every) - len(errors)
    share = sum(e <= 0.05 for e in errors) / len(every)
    assert m["summary"]["tempo_within_5pct"] == pytest.approx(share, abs=1e-5)
    if errors:
        assert m["summary"]["tempo_error_median"] == pytest.approx(float(np.median(errors)), abs=1e-5)
    else:
        assert m["summary"]["tempo_error_median"] is None
    # the seam ratio of each stream, and of the real renders on the same block grid
    seams = [p["seam_ratio"] for p in m["prompts"]]
    assert m["summary"]["seam_flux_ratio"] == pytest.approx(float(np.nanmean(seams)), abs=1e-5)
    assert 0.5 < m["summary"]["seam_flux_ratio_real"] < 2.0
    # same model, same seeds: the comparison curve is the same stream
    assert metrics["models"][1]["windows"] == m["windows"]
    assert metrics["real"]["adherence"] >= 0.9
    png = out / "metrics.png"
    assert png.is_file() and png.stat().st_size > 10_000
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _blocky(sr: int, block_s: float, seconds: float, seed: int, jump: float) -> np.ndarray:
    """Noise whose colour changes at every block seam by `jump` (0: one colour throughout), with beats
    off the grid (a 1.7 s period) so real onsets fall at every phase."""
    rng = np.random.default_rng(seed)
    n, b = int(seconds * sr), int(round(block_s * sr))
    noise = rng.standard_normal(n)
    gains = 1.0 + jump * rng.random(-(-n // b))
    out = noise * np.repeat(gains, b)[:n]
    hits = (np.arange(n) / sr % 1.7) < 0.03
    return (0.1 * out * (1.0 + 3.0 * hits)).astype(np.float32)


@pytest.mark.parametrize("sr, block_s", [(44100, 8192 / 44100), (16000, 0.512)])
def test_seam_ratio_hears_blocks_that_do_not_continue_each_other(sr, block_s):
    """Music with no seams reads about 1 at any phase of the block grid; a level jump at every seam reads
    well above it, and only on the grid it was made on."""
    from lmdm_live.eval.seams import seam_profile, seam_ratio

    smooth = _blocky(sr, block_s, 30.0, 0, jump=0.0)
    seamed = _blocky(sr, block_s, 30.0, 0, jump=3.0)
    assert 0.9 < seam_ratio(smooth, sr, block_s) < 1.1
    assert seam_ratio(seamed, sr, block_s) > 1.25
    assert seam_ratio(seamed, sr, block_s * 1.37) < 1.1  # a different grid does not line up with the seams
    profile = seam_profile(seamed, sr, block_s)
    assert profile.shape == (16,) and int(np.argmax(profile)) in (0, 1)
    assert np.isnan(seam_ratio(np.zeros(sr // 10, np.float32), sr, block_s))


def test_saturation_figures_tell_noise_from_a_tone():
    """The transition report's over-saturation figures: white noise is flat (near 1), a tone is not; the
    peak is the loudest sample of exactly the blocks asked for."""
    from lmdm_live.eval.transitions import saturation

    sr, bs = 16000, 0.5
    t = np.arange(int(4 * bs * sr)) / sr
    tone = 0.3 * np.sin(2 * np.pi * 440 * t)
    noise = np.random.default_rng(0).standard_normal(len(t)) * 0.1
    audio = np.concatenate([tone, noise])
    a, b = saturation(audio, sr, bs, 0, 4), saturation(audio, sr, bs, 4, 4)
    assert a["flatness"] < 0.05 < 0.4 < b["flatness"]
    assert a["peak"] == pytest.approx(0.3, abs=1e-3) and b["peak"] == pytest.approx(np.abs(noise).max())


def test_a_classifier_trained_on_fewer_styles_loads_and_never_names_the_new_ones():
    """The label lists only grow at their end: an older classifier keeps its classes where they were, and
    the classes added since are never its answer (it has not heard them)."""
    from lmdm_live.eval.classifier import Classifier
    from lmdm_live.model.checkpoint import load_checkpoint_config
    from lmdm_live.train.labels import STYLES

    shipped = Path(__file__).resolve().parents[2] / "lmdm_live" / "assets" / "classifier"
    known = load_checkpoint_config(shipped / "classifier.safetensors")["vocab"]["style"]
    clf = Classifier.load(shipped)
    rng = np.random.default_rng(0)
    windows = [0.3 * rng.standard_normal(16000 * 4).astype(np.float32) for _ in range(4)]
    windows.append(np.sin(2 * np.pi * 220 * np.arange(16000 * 4) / 16000).astype(np.float32))
    for pred in clf.predict(np.stack(windows), 16000):
        assert pred.labels["style"] in known
        assert len(pred.probs["style"]) == len(STYLES) > len(known)


def test_prompts_of_classes_the_classifier_never_learnt_are_left_out():
    """A prompt in a style added after the classifier was trained would score a miss whatever played: the
    evaluation leaves such test examples out of its prompts and its real reference, and keeps the rest."""
    from lmdm_live.eval.classifier import Classifier
    from lmdm_live.eval.run import default_prompts, judged_by

    shipped = Path(__file__).resolve().parents[2] / "lmdm_live" / "assets" / "classifier"
    clf = Classifier.load(shipped)
    assert clf.can_judge({"style": "techno", "mode": "minor", "lead": "synth_lead", "bpm": 128})
    assert not clf.can_judge({"style": "dub", "mode": "minor", "bpm": 70})
    examples = [
        {"id": "0", "split": "test", "caption": "techno", "labels": {"style": "techno", "bpm": 130.0}},
        {"id": "1", "split": "test", "caption": "dub", "labels": {"style": "dub", "bpm": 70.0}},
        {"id": "2", "split": "train", "caption": "dub too", "labels": {"style": "dub", "bpm": 72.0}},
    ]
    index, left_out = judged_by({"examples": examples, "sample_rate": 16000}, clf)
    assert left_out == 1
    assert [ex["id"] for ex in index["examples"]] == ["0", "2"]
    assert [p["prompt"] for p in default_prompts(index)] == ["techno"]
    assert judged_by({"examples": examples}, Classifier(clf.net, clf.cfg))[1] == 0  # one that knows them all
