"""Tone channels: a sketch handed to the model as the codec's tokens of a plain tone at its pitch and loudness."""

from __future__ import annotations

import math

import pytest
import torch
from deaf import deafened
from melodies import melody_set

from lmdm_live.cli import main
from lmdm_live.eval.sketch_use import SketchUseConfig, sketch_use, sketch_variants
from lmdm_live.live.stream import LMDMStream, StreamParams
from lmdm_live.model.bundle import LMDMModel
from lmdm_live.model.codec import MelCodec, MelCodecConfig
from lmdm_live.model.extras import ExtrasLayout, sketch_channels
from lmdm_live.model.lmdm import LMDMConfig
from lmdm_live.model.samplers import SamplerSettings
from lmdm_live.model.tone import TONE_GAIN, ToneMap, harmonic_tone, tone_map
from lmdm_live.train.project import project_model
from lmdm_live.train.tone import add_tone

DIM = 16
WINDOW = LMDMConfig(mode="causal", context_frames=8, block_frames=4)


def steady(pitch: float, n: int, voiced: float = 1.0, loud: float = -20.0, strength: float = 1.0):
    return strength * sketch_channels(
        torch.full((n,), pitch), torch.full((n,), voiced), torch.full((n,), loud), torch.full((n,), 1e3)
    )


@pytest.fixture(scope="module")
def codec() -> MelCodec:
    return MelCodec(MelCodecConfig()).eval()


@pytest.fixture(scope="module")
def narrow() -> LMDMModel:
    """tiny-mel on 16 orthonormal directions of its tokens, with tempo and sketch channels."""
    m = LMDMModel.preset("tiny-mel", lmdm=WINDOW, seed=0, extras={"tempo": True, "sketch": True})
    q, _ = torch.linalg.qr(torch.randn(m.mel_codec.dim, DIM, generator=torch.Generator().manual_seed(0)))
    return project_model(m, m.mel_codec.projected(q, torch.zeros(m.mel_codec.dim)))


@pytest.mark.parametrize("pitch", [24.0, 45.25, 60.0, 71.5, 83.0])
def test_the_tone_is_what_the_codec_hears_of_that_tone(codec, pitch):
    frames = 40
    f0 = torch.tensor([440.0 * 2 ** ((pitch - 69) / 12)])
    audio = harmonic_tone(f0, frames * codec.cfg.mel.hop, codec.sample_rate) * 10 ** (-20 / 20)
    heard = codec.analysis.log_mel(audio)[0, :, 8:-8].mean(dim=1)  # frames wholly inside the tone
    tm = tone_map(codec)
    made = tm.log_mel(torch.tensor([pitch]), torch.ones(1), torch.tensor([-20.0]))[:, 0]
    near = heard > heard.max() - 6 * math.log(10) / codec.cfg.mel.scale  # bands within 60 dB of the loudest
    assert near.sum() >= 10
    assert (made - heard)[near].abs().max() < 0.08
    # tokens: each of a token's frames holds that frame, so they are the codec's own, on the mean
    tokens = codec.encode(audio)[0, :, 2:-2].mean(dim=1)
    loud = tokens > tokens.max() - 6 * math.log(10) / codec.cfg.mel.scale
    made_tokens = tm.tokens(steady(pitch, 3))[:, 0] / TONE_GAIN
    assert (made_tokens - tokens)[loud].abs().max() < 0.2  # the frames averaged differ from the table's
    fifth = tm.tokens(steady(pitch + 7, 3))[:, 0] / TONE_GAIN  # a fifth up is another comb
    assert (fifth - tokens)[loud].abs().max() > 0.5


def test_between_table_steps_the_tone_stays_near_the_codecs(codec):
    pitch, frames = 57.13, 40
    f0 = torch.tensor([440.0 * 2 ** ((pitch - 69) / 12)])
    audio = harmonic_tone(f0, frames * codec.cfg.mel.hop, codec.sample_rate) * 0.1
    heard = codec.analysis.log_mel(audio)[0, :, 8:-8].mean(dim=1)
    made = tone_map(codec).log_mel(torch.tensor([pitch]), torch.ones(1), torch.tensor([-20.0]))[:, 0]
    near = heard > heard.max() - 3 * math.log(10) / codec.cfg.mel.scale
    assert (made - heard)[near].abs().mean() < 0.15


def test_loudness_voicing_off_and_strength(codec):
    tm = tone_map(codec)
    assert tone_map(codec) is tm  # built once per codec
    quiet, loud = tm.tokens(steady(60, 3, loud=-30)), tm.tokens(steady(60, 3, loud=-10))
    above = quiet > (tm.floor + 0.5) * TONE_GAIN  # bands above the floor in both move by 20 dB's worth
    assert torch.allclose((loud - quiet)[above], torch.tensor(20 * tm.db_step * TONE_GAIN), atol=1e-4)
    assert torch.allclose(tm.tokens(steady(60, 3, voiced=0.0)), torch.tensor(tm.floor * TONE_GAIN))  # silence
    assert (tm.tokens(torch.zeros(5, 3)) == 0).all()  # sketch off: nothing
    half = tm.tokens(steady(60, 3, strength=0.5))
    assert torch.allclose(half, 0.5 * tm.tokens(steady(60, 3)), atol=1e-5)


def test_a_projected_codecs_tone_is_the_projection_of_the_plain_one(codec, narrow):
    plain = tone_map(codec).tokens(steady(64.5, 5))
    basis = narrow.mel_codec.basis
    assert torch.allclose(tone_map(narrow.mel_codec).tokens(steady(64.5, 5)), basis.T @ plain, atol=1e-3)


def test_layout_makes_the_tone_from_the_sketch(narrow):
    with pytest.raises(ValueError, match="needs sketch"):
        ExtrasLayout(tone=True, latent_dim=DIM)
    with pytest.raises(ValueError, match="no tone map"):
        ExtrasLayout(sketch=True, tone=True, latent_dim=DIM).build(4, sketch=steady(60, 4))
    tm = tone_map(narrow.mel_codec)
    layout = ExtrasLayout(tempo=True, sketch=True, latent_dim=DIM, tone=True, tone_map=tm)
    off = layout.offsets()
    assert off["tone"] == slice(10, 10 + DIM) and layout.channels == 10 + DIM  # after tempo and sketch
    built = layout.build(6, sketch=steady(62, 6))
    assert torch.equal(built[off["tone"]], tm.tokens(steady(62, 6)))
    assert (layout.build(6)[off["tone"]] == 0).all()  # no sketch, no tone
    built[off["sketch"]] = steady(55, 6)  # edited afterwards: with_tone makes it again
    assert torch.equal(layout.with_tone(built[None])[0, off["tone"]], tm.tokens(steady(55, 6)))
    assert layout.to_dict()["tone"] is True
    assert "tone" not in ExtrasLayout(sketch=True, latent_dim=DIM).to_dict()  # old files stay as they were


def same(a: dict, b: dict) -> None:
    """Two reports alike to float rounding (a wider input matrix sums in another order)."""
    assert a.keys() == b.keys()
    for k in a:
        assert a[k] == pytest.approx(b[k], rel=1e-5, abs=1e-6), k


def test_add_tone_plays_as_before_then_hears_pitch_through_the_tone(narrow, tmp_path):
    data = melody_set(narrow, frames=40)
    cfg = SketchUseConfig(windows=4, seeds=2, targets=2)
    before = sketch_use(narrow, data, cfg)
    widened = add_tone(narrow)
    assert widened.layout.tone and widened.dit.cfg.input_add_dim == narrow.dit.cfg.input_add_dim + DIM
    same(sketch_use(widened, data, cfg), before)  # zero weights: the same losses
    with pytest.raises(ValueError, match="already"):
        add_tone(widened)
    with pytest.raises(ValueError, match="no sketch"):
        add_tone(LMDMModel.preset("tiny-mel", lmdm=WINDOW, extras={"tempo": True}))

    # the sketch's own inputs cut: a melody moved a fifth costs nothing while the tone's weights are zero,
    # and costs the model once they are not
    deaf = deafened(widened, "sketch")
    silent = sketch_use(deaf, data, cfg)["with context"]
    assert abs(silent["a fifth up"] - silent["true"]) < 1e-6
    first = 1 + DIM + deaf.layout.offsets()["tone"].start
    with torch.no_grad():
        deaf.dit.to_input_add_embed.weight[:, first:] = 0.05 * torch.randn(
            deaf.dit.cfg.embed_dim, DIM, generator=torch.Generator().manual_seed(2)
        )
    heard = sketch_use(deaf, data, cfg)
    fifth = heard["with context"]["a fifth up"] / heard["with context"]["true"] - 1
    assert abs(fifth) > 1e-4, heard

    deaf.save(tmp_path / "m.safetensors")
    back = LMDMModel.load(tmp_path / "m.safetensors")
    assert back.layout.tone
    same(sketch_use(back, data, cfg), heard)


def test_eval_sketch_variants_carry_their_own_tone(narrow):
    widened = add_tone(narrow)
    layout, n = widened.layout, 10
    extras = torch.stack([layout.build(n, sketch=steady(60 + k, n)) for k in range(3)])
    v = sketch_variants(extras, widened)
    tn = layout.offsets()["tone"]
    tm = layout.tone_map
    assert torch.allclose(v["a fifth up"][0, tn], tm.tokens(steady(67, n)), atol=1e-4)
    assert torch.equal(v["another window's"][1, tn], extras[0, tn])
    assert (v["off"][:, tn] == 0).all()


def test_train_tone_cli(narrow, tmp_path, capsys):
    src = tmp_path / "in.safetensors"
    narrow.save(src)
    out = tmp_path / "out" / "tone.safetensors"
    assert main(["train", "tone", "--model", str(src), "--out", str(out)]) == 0
    assert f"{DIM} tone channels" in capsys.readouterr().out
    assert LMDMModel.load(out).layout.tone
    assert main(["train", "tone", "--model", str(src), "--out", str(out)]) == 2
    assert "exists" in capsys.readouterr().err


def test_tone_table_covers_the_sketch_range(codec):
    tm = ToneMap(codec)
    assert tm.table.shape == (4 * (108 - 24) + 1, codec.cfg.mel.n_mels)
    # the fundamental's band rises with the pitch: an octave up, the lowest loud band is higher
    low, high = tm.log_mel(torch.tensor([48.0, 60.0]), torch.ones(2), torch.zeros(2)).t()
    first_loud = [
        int(torch.nonzero(x > x.max() - 3 * math.log(10) / 10 / codec.cfg.mel.scale)[0]) for x in (low, high)
    ]
    assert first_loud[1] > first_loud[0]


def test_the_stream_hears_the_melody_through_the_tone(narrow, text):
    model = deafened(add_tone(narrow), "sketch")  # the pitch can reach it only as tone

    def block(pitch: float) -> torch.Tensor:
        params = StreamParams.of("a solo melody", sampler=SamplerSettings(steps=2))
        s = LMDMStream(model, text, seed=1, params=params, decode=False)
        return s.next_latents(sketch=steady(pitch, model.lmdm.block_frames))

    assert torch.equal(block(60), block(67))  # the tone's weights are zero yet
    first = 1 + DIM + model.layout.offsets()["tone"].start
    with torch.no_grad():
        model.dit.to_input_add_embed.weight[:, first:].normal_(0, 0.05)
    assert not torch.allclose(block(60), block(67), atol=1e-4)


def test_a_codec_whose_tokens_are_not_log_mel_has_no_tone():
    from dataclasses import replace

    from lmdm_live.model.vocoder import VocoderConfig

    small = VocoderConfig(dim=16, depth=1, latent_dim=8)
    learnt = MelCodec(replace(MelCodecConfig(), inverse="autoencoder", vocoder=small)).eval()
    with pytest.raises(ValueError, match="autoencoder"):
        ToneMap(learnt)
