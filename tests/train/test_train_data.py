"""The training-data renderer, the folder importer, training windows and the whole `train` pipeline, for real:
FluidSynth with the GM soundfont, music21's corpus, swift-f0, MiniLM."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import soundfile as sf
import torch

from lmdm_live.cli import main
from lmdm_live.model.extras import ExtrasLayout, tempo_channels
from lmdm_live.train.dataset import (
    SKETCH_KEYS,
    DatasetWriter,
    RenderConfig,
    add_sketch_controls,
    import_folder,
    load_index,
    render_dataset,
    render_example,
    scores_for,
    solo_caption,
    split_of,
)
from lmdm_live.train.labels import FAMILIES, STYLES, tempo_bucket
from lmdm_live.train.music import NOTE_NAMES, STYLE_WORDS, caption, procedural_piece
from lmdm_live.train.stage1 import LatentSet
from lmdm_live.train.synth import StemSynth
from lmdm_live.train.windows import ExtrasConfig, causal_median, window_batch

SECONDS = 4.0
N = 16  # the first 16 styles of the render cycle (tests/train/test_train_styles.py renders the rest)
CFG = RenderConfig(seconds=SECONDS)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("data")
    render_dataset(out, 8 * SECONDS / 3600, CFG)  # one style cycle: train
    render_dataset(out, 12 * SECONDS / 3600, CFG, split="valid")  # held out, as `train data --split` does
    render_dataset(out, N * SECONDS / 3600, CFG, split="test")
    add_sketch_controls(out)
    return out


def test_stems_sum_to_the_mix_and_captions_match_the_parameters(dataset):
    index = load_index(dataset)
    assert index["sample_rate"] == 16000 and index["hop"] == 512 and len(index["examples"]) == N
    assert {e["labels"]["style"] for e in index["examples"]} == set(STYLES[:N])
    assert {e["split"] for e in index["examples"]} == {"train", "valid", "test"}
    for e in index["examples"]:
        mix, sr = sf.read(dataset / "audio" / f"{e['id']}.wav", dtype="float32")
        assert sr == 16000 and len(mix) == int(SECONDS * sr) and np.abs(mix).max() > 0.05
        stems = [sf.read(dataset / "stems" / e["id"] / f"{s}.wav", dtype="float32")[0] for s in e["stems"]]
        assert "lead" in e["stems"] and len(stems) >= 2
        assert np.abs(np.sum(stems, axis=0) - mix).max() < 1e-6  # stems sum to the mix
        assert all(np.abs(s).max() > 1e-3 for s in stems)  # every stem sounds
        lab, cap = e["labels"], e["caption"]
        assert lab["style"] in STYLES and lab["lead"] in FAMILIES and set(lab["families"]) <= set(FAMILIES)
        assert lab["tempo_bucket"] == tempo_bucket(lab["bpm"])
        assert STYLE_WORDS[lab["style"]] in cap
        assert f"in {lab['key']} {lab['mode']}" in cap and lab["key"] in NOTE_NAMES
        assert re.search(rf"\b{round(lab['bpm'])} bpm$", cap)
        assert cap.startswith({"slow": "slow", "mid": "mid-tempo", "fast": "fast"}[lab["tempo_bucket"]])
        assert ("drums" in lab["families"]) == ("drums" in cap and "no drums" not in cap)


def test_controls_are_on_the_latent_grid(dataset):
    index = load_index(dataset)
    frames = int(SECONDS * 16000) // 512
    voiced_somewhere = 0
    for e in index["examples"]:
        with np.load(dataset / "controls" / f"{e['id']}.npz") as z:
            c = dict(z)
        assert all(len(c[k]) == frames for k in ("bpm", "beat_phase", "bar_phase", *SKETCH_KEYS))
        bpm = e["labels"]["bpm"]
        step = np.diff(c["beat_phase"]) % 1.0  # the beat advances bpm/60 * hop/sr per frame
        assert np.allclose(step, (bpm / 60 * 512 / 16000) % 1.0, atol=1e-4)
        assert np.all(c["bpm"] == bpm)
        voiced_somewhere += c["voiced"].mean() > 0.2
        lead_pitch = c["pitch_midi"][c["voiced"] > 0]
        if len(lead_pitch):
            assert 24 < np.median(lead_pitch) < 108
    assert voiced_somewhere >= N // 2  # the lead stem's pitch is tracked


def test_rendering_is_deterministic_and_resumes(dataset, tmp_path):
    first = load_index(dataset)["examples"][:4]
    render_dataset(tmp_path, 2 * SECONDS / 3600, CFG)  # a fresh run of the first two ...
    before = (tmp_path / "audio" / "000000.wav").stat().st_mtime_ns
    render_dataset(tmp_path, 4 * SECONDS / 3600, CFG)  # ... then resumed to four
    index = load_index(tmp_path)
    assert [e["id"] for e in index["examples"]] == ["000000", "000001", "000002", "000003"]
    assert (tmp_path / "audio" / "000000.wav").stat().st_mtime_ns == before  # kept, not re-rendered
    for a, b in zip(first, index["examples"]):
        assert a["caption"] == b["caption"]
        x = sf.read(dataset / "audio" / f"{a['id']}.wav")[0]
        y = sf.read(tmp_path / "audio" / f"{b['id']}.wav")[0]
        assert np.array_equal(x, y)


def test_only_one_split_renders_the_examples_a_whole_render_puts_there(tmp_path):
    """`--only test`: just the held-out examples (the tenth cycle of 23 styles: 207-229, ...), each the same
    as the example a whole render makes at that index."""
    n = len(CFG.cycle)
    render_dataset(tmp_path / "none", 4 * SECONDS / 3600, CFG, only="test")  # indices 0-3: none is test
    assert load_index(tmp_path / "none")["examples"] == []
    wanted = [i for i in range(10 * n + 1) if split_of(i, n) == "test"]
    assert wanted[0] == 9 * n and len(wanted) == n
    render_dataset(tmp_path / "t", (wanted[0] + 2) * SECONDS / 3600, CFG, only="test")
    got = load_index(tmp_path / "t")["examples"]
    assert [e["id"] for e in got] == [f"{i:06d}" for i in wanted[:2]]
    assert {e["split"] for e in got} == {"test"}
    synth = StemSynth(CFG.sample_rate, CFG.soundfont)
    try:
        writer = DatasetWriter(tmp_path / "whole", CFG.sample_rate, CFG.hop, CFG.kind)
        writer.add(*render_example(wanted[1], CFG, synth, scores_for(CFG)))
        writer.flush()
    finally:
        synth.close()
    ref = load_index(tmp_path / "whole")["examples"][0]
    assert ref["split"] == "test" and ref["caption"] == got[1]["caption"]
    x = sf.read(tmp_path / "whole" / "audio" / f"{ref['id']}.wav")[0]
    assert np.array_equal(x, sf.read(tmp_path / "t" / "audio" / f"{got[1]['id']}.wav")[0])


def test_caption_words_follow_the_piece():
    import random

    p = procedural_piece("techno", random.Random(3), 8.0)
    c = caption(p)
    assert "techno" in c and "four-on-the-floor" in c and f"{round(p.bpm)} bpm" in c
    assert "lead lead" not in c


def _click_track(bpm: float, seconds: float, sr: int = 16000) -> np.ndarray:
    x = np.zeros(int(seconds * sr), np.float32)
    period = 60.0 / bpm
    t = np.arange(int(0.03 * sr)) / sr
    click = (np.sin(2 * np.pi * 900 * t) * np.exp(-t * 120)).astype(np.float32)
    for k in range(int(seconds / period)):
        i = int(k * period * sr)
        x[i : i + len(click)] += click[: len(x) - i]
    return x * 0.5


def test_import_folder_with_captions_and_estimated_tempo(tmp_path):
    src = tmp_path / "mine"
    src.mkdir()
    sf.write(src / "loop_a.wav", _click_track(100, 9.0, 22050), 22050)
    (src / "loop_a.txt").write_text("sparse clicks, 100 bpm\n")
    sf.write(src / "b.flac", _click_track(140, 5.0), 16000)
    (src / "captions.json").write_text(json.dumps({"b.flac": {"caption": "fast clicks", "bpm": 140}}))
    out = tmp_path / "data"
    import_folder(src, out, RenderConfig(seconds=4.0))
    add_sketch_controls(out)
    ex = load_index(out)["examples"]
    caps = [e["caption"] for e in ex]
    assert caps.count("sparse clicks, 100 bpm") == 2 and caps.count("fast clicks") == 1
    a = next(e for e in ex if e["caption"].startswith("sparse"))
    assert abs(a["labels"]["bpm"] - 100) / 100 < 0.03  # estimated from the audio
    assert next(e for e in ex if e["caption"] == "fast clicks")["labels"]["bpm"] == 140  # given
    for e in ex:
        with np.load(out / "controls" / f"{e['id']}.npz") as z:
            assert all(k in z for k in SKETCH_KEYS)
    with pytest.raises(ValueError, match="no audio files"):
        import_folder(tmp_path / "data" / "stems", tmp_path / "x", RenderConfig())


def test_codec_report_reads_pitch_and_tempo_clean_and_through_the_codec(dataset, tmp_path, capsys):
    """`eval codec` on the rendered test split with a small random autoencoder: the clean leads are pitched,
    the round trip keeps next to none of their pitch, and every mix gets a tempo window each way."""
    from lmdm_live.model.bundle import LMDMModel
    from lmdm_live.model.oobleck import OobleckConfig, OobleckVAE

    torch.manual_seed(0)
    tiny = LMDMModel.preset("tiny")
    cfg = OobleckConfig(
        in_channels=1, out_channels=1, channels=4, c_mults=(1, 2), strides=(2, 4), latent_dim=8
    )
    tiny.vae, tiny.sample_rate = OobleckVAE(cfg).eval(), 16000
    tiny.save(tmp_path / "tiny.safetensors")
    out = tmp_path / "codec.json"
    args = ["eval", "codec", "--model", str(tmp_path / "tiny.safetensors"), "--data", str(dataset)]
    assert main([*args, "--out", str(out), "--no-melody", "--no-speed"]) == 0
    report = json.loads(out.read_text())
    assert json.loads(capsys.readouterr().out) == report
    tests = [e for e in load_index(dataset)["examples"] if e["split"] == "test"]
    assert report["examples"] == report["lead"]["stems"] == report["tempo"]["windows"] == len(tests)
    assert report["lead"]["voiced_clean"] > 0.3  # the renders' leads are pitched
    assert report["lead"]["frames_voiced_in_both"] > 100
    assert report["lead"]["pitch_kept"] < 0.2  # a random decoder buzzes, but not at the lead's pitch
    assert report["spectrum"]["mel_distance"] > 1.0 and report["spectrum"]["stft_distance"] > 1.0
    # what `pitch_kept` counts: within a semitone and voiced, of the clean voiced frames
    from dataclasses import replace

    from lmdm_live.dsp.sketch import SketchConfig, control_curves
    from lmdm_live.eval.codec import kept_frames

    a = control_curves(
        sf.read(dataset / "stems" / tests[0]["id"] / "lead.wav", dtype="float32")[0], SketchConfig()
    )
    kept, voiced = kept_frames(a, a)
    assert voiced > 20 and kept == voiced
    assert kept_frames(a, replace(a, pitch_midi=a.pitch_midi + 0.5)) == (voiced, voiced)
    assert kept_frames(a, replace(a, pitch_midi=a.pitch_midi + 2.0)) == (0, voiced)
    assert kept_frames(a, replace(a, voiced=np.zeros_like(a.voiced))) == (0, voiced)


def test_causal_median_and_training_windows():
    x = torch.tensor([[0.0, 0, 0, 9, 0, 0, 5, 5, 5, 5]])
    assert causal_median(x, 3).tolist() == [[0.0, 0, 0, 0, 0, 0, 0, 5, 5, 5]]  # spike gone, no look-ahead
    io, frames = 8, 40
    g = torch.Generator().manual_seed(0)
    n = 6
    beat = (torch.arange(frames) * 0.1) % 1.0
    controls = [
        torch.stack([torch.full((frames,), 120.0), beat, beat / 4, *torch.rand(4, frames, generator=g)])
    ]
    data = LatentSet(
        [torch.randn(io, frames, generator=g) for _ in range(n)],
        torch.randn(n, 3, 4),
        controls * n,
        [torch.full((io, frames), 7.0)] * n,
        [torch.full((io, frames), -3.0)] * n,
    )
    layout = ExtrasLayout(True, True, True, io)
    lat, tok, ext = window_batch(data, layout, ExtrasConfig(p_tempo_off=0, p_accomp=0.5), 64, 16, 8, g)
    assert lat.shape == (64, io, 24) and tok.shape == (64, 3, 4) and ext.shape == (64, layout.channels, 24)
    off = layout.offsets()
    jam = ext[:, off["accomp"]][:, 0].amax(-1) > 0  # the accompaniment's on-flag
    assert 10 < int(jam.sum()) < 54
    assert torch.all(lat[jam] == -3.0)  # a jamming window's target is the mix without the drums
    vis = ext[jam][:, off["accomp"]][:, 0]  # visible up to C + t_f, t_f in [-T, T]
    assert torch.all(vis[:, :8] == 1) and torch.all(vis.diff(dim=-1) <= 0)  # a prefix: nothing after t_f
    assert len(set(vis.sum(-1).tolist())) > 3  # t_f varies
    assert torch.all(ext[jam][:, off["accomp"]][:, 1:] == 7.0 * vis[:, None])
    tempo = ext[:, off["tempo"]]
    phase = (torch.atan2(tempo[:, 0], tempo[:, 1]) / (2 * np.pi)) % 1.0  # decodes to the 0.1/frame beat
    assert torch.allclose(phase.diff(dim=-1) % 1.0, torch.full((64, 23), 0.1), atol=1e-4)
    assert torch.allclose(tempo[:, 4], torch.zeros(64, 24))  # 120 bpm
    assert torch.allclose(
        tempo[0], tempo_channels(torch.full((24,), 120.0), phase[0], tempo_channels_bar(tempo[0]))
    )


def test_solo_windows_are_the_lead_under_its_caption_sketched_by_itself():
    io, frames, n = 8, 24, 4  # one window per clip: the crop starts at 0
    g = torch.Generator().manual_seed(1)
    rows = torch.rand(9, frames, generator=g)
    rows[0], rows[4] = 120.0, 1.0  # bpm; voiced everywhere
    rows[3] = 60.0 + 12.0 * rows[3]  # pitch
    rows[5], rows[6], rows[7], rows[8] = -30.0, 2000.0, -10.0, 500.0  # mix vs lead loudness and centroid
    data = LatentSet(
        [torch.zeros(io, frames)] * n,
        torch.zeros(n, 3, 4),
        [rows] * n,
        [torch.full((io, frames), 7.0)] * n,
        [torch.full((io, frames), -3.0)] * n,
        [torch.full((io, frames), 5.0)] * n,
        torch.ones(n, 3, 4),
    )
    layout = ExtrasLayout(True, True, True, io)
    cfg = ExtrasConfig(p_sketch=0.0, p_accomp=1.0, p_solo=0.5, p_sketch_solo=1.0, median_kernels=(1,))
    lat, tok, ext = window_batch(data, layout, cfg, 64, 16, 8, g)
    solo = lat[:, 0, 0] == 5.0
    assert 10 < int(solo.sum()) < 54
    assert torch.all(lat[~solo] == -3.0)  # p_accomp 1: every other window is a jam
    assert torch.all(tok[solo] == 1.0) and torch.all(tok[~solo] == 0.0)  # the solo caption's tokens
    off = layout.offsets()
    sk = ext[:, off["sketch"]]
    assert torch.all(sk[~solo] == 0) and torch.all(sk[solo][:, 0] == 1)  # p_sketch 0 in the mix windows
    assert torch.allclose(sk[solo][:, 1], ((rows[3] - 60) / 12).expand(int(solo.sum()), 24))
    assert torch.allclose(sk[solo][:, 3], torch.full_like(sk[solo][:, 3], 1.5))  # (-10 + 40) / 20: the lead's
    assert torch.allclose(sk[solo][:, 4], torch.full_like(sk[solo][:, 4], -1.0))  # log2(500 / 1000)
    assert torch.all(ext[solo][:, off["accomp"]] == 0)  # a solo is never a jam
    with pytest.raises(ValueError, match="p_solo"):
        ExtrasConfig(p_solo=1.5)


def test_solo_caption_names_the_lead_and_no_drums():
    e = {"labels": {"lead": "synth_lead", "key": "D", "mode": "minor", "bpm": 127.6}}
    assert solo_caption(e) == "a solo melody on synth lead, no drums, in D minor, 128 bpm"
    assert solo_caption({"labels": {}}) == "a solo melody on an instrument, no drums"


def tempo_channels_bar(t: torch.Tensor) -> torch.Tensor:
    return (torch.atan2(t[2], t[3]) / (2 * np.pi)) % 1.0


@pytest.mark.integration
def test_train_pipeline_end_to_end(dataset, tmp_path, capsys):
    """data -> ae -> latents -> stage1 -> arc, each a CLI call; the result plays with tempo channels."""
    from lmdm_live.live.stream import LMDMStream, StreamParams
    from lmdm_live.model.bundle import LMDMModel

    ae, lat, s1, arc = tmp_path / "ae", tmp_path / "lat.safetensors", tmp_path / "s1", tmp_path / "arc"
    assert (
        main(
            [
                "train",
                "ae",
                "--data",
                str(dataset),
                "--out",
                str(ae),
                "--steps",
                "3",
                "--save-every",
                "3",
                "--channels",
                "8",
                "--batch",
                "2",
            ]
        )
        == 0
    )
    evals = json.loads((ae / "progress.json").read_text())["evals"]
    assert evals and np.isfinite(evals[-1]["stft_distance"])
    assert (
        main(
            [
                "train",
                "latents",
                "--data",
                str(dataset),
                "--vae",
                str(ae / "vae.safetensors"),
                "--out",
                str(lat),
            ]
        )
        == 0
    )
    ls = LatentSet.load(lat)
    assert ls.controls is not None and ls.drums is not None and len(ls.latents) == 8
    assert ls.lead is not None and all(
        z is not None and z.shape == x.shape for z, x in zip(ls.lead, ls.latents)
    )
    assert ls.solo_tokens.shape == ls.tokens.shape and not torch.equal(ls.solo_tokens, ls.tokens)
    assert all(c.shape[0] == 9 for c in ls.controls)  # with the lead's own loudness and centroid
    assert abs(float(torch.cat([z.flatten() for z in ls.latents]).std()) - 1.0) < 1e-3  # unit variance
    assert (
        main(
            [
                "train",
                "stage1",
                "--data",
                str(lat),
                "--vae",
                str(tmp_path / "lat.vae.safetensors"),
                "--model",
                "tiny",
                "--mode",
                "causal",
                "--context",
                "32",
                "--block",
                "16",
                "--out",
                str(s1),
                "--steps",
                "3",
                "--batch",
                "2",
                "--save-every",
                "3",
                "--lr",
                "1e-3",
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "train",
                "arc",
                "--data",
                str(lat),
                "--model",
                str(s1 / "model.safetensors"),
                "--out",
                str(arc),
                "--steps",
                "1",
                "--batch",
                "2",
                "--rollout",
                "2",
                "--sampler-steps",
                "3",
            ]
        )
        == 0
    )
    hist = json.loads((arc / "progress.json").read_text())["history"]
    assert len(hist) == 1 and all(np.isfinite(v) for v in hist[0].values())
    model = LMDMModel.load(arc / "model.safetensors")
    assert model.layout == ExtrasLayout(True, True, True, 32) and model.sample_rate == 16000
    stream = LMDMStream(model, model.text_encoder(), params=StreamParams.of("fast techno", bpm=128.0))
    audio = np.concatenate([stream.next_block() for _ in range(3)], axis=1)
    assert np.isfinite(audio).all() and audio.shape[0] == 1
    assert stream.beat == pytest.approx(3 * 16 * 128 / 60 * 512 / 16000)

    # decoder fine-tuning: the encoder (the latent space) is untouched, the decoder moves; re-running with
    # the same --steps on another DiT trained on the same latents moves the decoder into that file
    dec = tmp_path / "dec"
    base = [
        "train",
        "decoder",
        "--data",
        str(dataset),
        "--out",
        str(dec),
        "--batch",
        "2",
        "--save-every",
        "2",
    ]
    assert main([*base, "--model", str(arc / "model.safetensors"), "--steps", "2", "--lr", "1e-3"]) == 0
    s1_dec = tmp_path / "s1_dec.safetensors"
    assert (
        main([*base, "--model", str(s1 / "model.safetensors"), "--steps", "2", "--save-as", str(s1_dec)]) == 0
    )
    out, before, dit = (
        LMDMModel.load(p) for p in (s1_dec, arc / "model.safetensors", s1 / "model.safetensors")
    )
    sd_out, sd_before = out.vae.state_dict(), before.vae.state_dict()
    assert all(torch.equal(v, sd_before[k]) for k, v in sd_out.items() if k.startswith("encoder."))
    assert any(not torch.equal(v, sd_before[k]) for k, v in sd_out.items() if k.startswith("decoder."))
    assert all(torch.equal(v, dit.net.state_dict()[k]) for k, v in out.net.state_dict().items())
    assert json.loads((dec / "progress.json").read_text())["step"] == 2


def test_splits_hold_every_style():
    from lmdm_live.train.dataset import STYLES_ORDER, split_of

    n = len(STYLES_ORDER)
    by_split: dict[str, set[str]] = {}
    for i in range(20 * n):
        by_split.setdefault(split_of(i, n), set()).add(STYLES_ORDER[i % n])
    assert by_split == {s: set(STYLES_ORDER) for s in ("train", "valid", "test")}
