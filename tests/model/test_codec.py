"""The 44.1 kHz log-mel codec: tokens, the streaming inverses, training of the neural candidates, and the
shipped codec keeping a real melody (FluidSynth, swift-f0) on pitch."""

from __future__ import annotations

import random
from dataclasses import replace

import numpy as np
import pytest
import soundfile as sf
import torch

from lmdm_live.eval.codec import join_click_ratio, mel_distance, rolloff_hz
from lmdm_live.eval.melody import LEADS, melody, melody_check, note_track, on_note, render_melody
from lmdm_live.model.bundle import load_codec
from lmdm_live.model.codec import SHIPPED_CODEC, MelCodec, MelCodecConfig, decode_whole
from lmdm_live.model.mel import MelAnalysis, MelConfig, nnls_magnitude
from lmdm_live.model.vocoder import MelAutoencoder, MelVocoder, StreamingVocoder, VocoderConfig
from lmdm_live.train.codec import CodecTrainConfig, CodecTrainer, d_loss, harmonic_peak_loss

SR = 44100


@pytest.fixture(scope="module")
def flute() -> np.ndarray:
    """Two octaves of a flute melody from MIDI (about 24 s)."""
    return render_melody(73, melody(67), SR)


def round_trip(codec, audio: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        y = codec.decode(codec.encode(torch.from_numpy(audio)[None, None]))[0, 0].numpy()
    return np.pad(y, (0, len(audio) - len(y)))


def test_tokens_are_mel_frames_side_by_side_at_under_32_per_second():
    mel = MelAnalysis(MelConfig())
    assert SR / mel.cfg.token_hop <= 32 and mel.cfg.token_dim == 512
    x = torch.randn(2, 128, 40)
    tokens = mel.to_tokens(x)
    assert tokens.shape == (2, 512, 10)
    assert torch.equal(mel.from_tokens(tokens), x)
    assert torch.equal(tokens[:, 128:256, 3], x[:, :, 13])  # token 3 holds frames 12..15 in order


def test_encoding_is_the_same_whole_or_after_silence():
    """Frames are centred on multiples of the hop with zeros before the start, so audio that follows a
    token's worth of silence encodes to the same tokens, one later."""
    codec = MelCodec(MelCodecConfig())
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 1, 10 * codec.hop, generator=g) * 0.1
    a = codec.encode(x)
    b = codec.encode(torch.cat([torch.zeros(1, 1, codec.hop), x], dim=-1))
    assert torch.allclose(a[..., 1:], b[..., 2:], atol=1e-4)
    assert not torch.allclose(a[..., :1], b[..., :1], atol=1e-2)


def test_nnls_inverse_is_non_negative_and_gives_the_band_powers_back(flute):
    mel = MelAnalysis(MelConfig())
    x = torch.from_numpy(flute[: 4 * SR])[None]
    power = mel.mel_power(mel.log_mel(x))
    mag = nnls_magnitude(mel.fb, power, iters=12)
    assert (mag >= 0).all()
    back = torch.einsum("mf,bft->bmt", mel.fb, mag)
    loud = power > power.amax() * 1e-4
    rel = ((back - power).abs() / power)[loud]
    assert float(rel.median()) < 0.05
    # the updates are what fits: the spread they start from misses the bands by far more
    start = torch.einsum("mf,bft->bmt", mel.fb, nnls_magnitude(mel.fb, power, iters=0))
    assert float(((start - power).abs() / power)[loud].median()) > 3 * float(rel.median())


def test_griffinlim_stream_joins_blocks_without_a_click(flute):
    """Blocks of 16 tokens decode to exactly their length (after the latency), the joins cannot be told
    from the rest of the signal, and the audio's mel is the tokens' mel."""
    codec = MelCodec(MelCodecConfig())
    x = flute[: 8 * codec.hop * 16]
    tokens = codec.encode(torch.from_numpy(x)[None, None])
    dec = codec.streaming_decoder()
    parts = [dec.push(tokens[..., i : i + 16]) for i in range(0, tokens.shape[-1], 16)]
    assert parts[0].shape[-1] == 16 * codec.hop - dec.latency_samples
    assert all(p.shape[-1] == 16 * codec.hop for p in parts[1:])
    parts.append(dec.flush())
    y = torch.cat(parts, dim=-1)[0, 0].numpy()
    assert len(y) == len(x)
    ratio = join_click_ratio(y[dec.latency_samples :], 16 * codec.hop, SR)
    assert ratio < 3.0, ratio
    # a hard splice (each block decoded on its own, phases starting afresh) is what a click looks like
    spliced = np.concatenate(
        [decode_whole(codec, tokens[..., i : i + 16])[0, 0].numpy() for i in range(0, tokens.shape[-1], 16)]
    )
    assert join_click_ratio(spliced, 16 * codec.hop, SR) > 3 * ratio
    assert mel_distance(x, y, SR) < 0.5
    assert abs(rolloff_hz(y, SR) / rolloff_hz(x, SR) - 1) < 0.15


def test_griffinlim_blocks_leave_no_seam_in_the_spectrum(flute):
    """Decoded in 4-token blocks (the default model's), the spectrum changes no more where blocks meet
    than a whole decode's does there. Fixing each block's last frame at once, with nothing to its right,
    makes a jump at every seam; keeping it open to the next block is what removes it."""
    from lmdm_live.eval.seams import seam_ratio
    from lmdm_live.model.griffinlim import StreamingGriffinLim

    codec = MelCodec(MelCodecConfig())
    assert codec.cfg.griffinlim.lookahead >= 1
    tokens = codec.encode(torch.from_numpy(flute[: 8 * SR])[None, None])  # 43 blocks
    block_s = 4 * codec.hop / SR

    def decoded(lookahead: int, push: int) -> np.ndarray:
        dec = codec.streaming_decoder()
        dec.gl = StreamingGriffinLim(replace(codec.cfg.griffinlim, lookahead=lookahead))
        dec.latency_samples = dec.gl.latency_samples
        parts = [dec.push(tokens[..., i : i + push]) for i in range(0, tokens.shape[-1], push)]
        y = torch.cat([*parts, dec.flush()], dim=-1)[0, 0].numpy()
        assert len(y) == tokens.shape[-1] * codec.hop  # any push size gives the whole stream
        return y

    whole = seam_ratio(decoded(codec.cfg.griffinlim.lookahead, tokens.shape[-1]), SR, block_s)
    shut = seam_ratio(decoded(0, 4), SR, block_s)
    opened = seam_ratio(decoded(codec.cfg.griffinlim.lookahead, 4), SR, block_s)
    assert opened < whole + 0.05 and shut > opened + 0.1, (whole, shut, opened)
    # pushes shorter than the lookahead, and of mixed sizes, still line up with the stream
    dec = codec.streaming_decoder()
    sizes = [1, 1, 3, 2, 5]
    start = np.cumsum([0, *sizes])
    parts = [dec.push(tokens[..., a:b]) for a, b in zip(start[:-1], start[1:])]
    assert sum(p.shape[-1] for p in parts) == start[-1] * codec.hop - dec.latency_samples
    assert dec.flush().shape[-1] == dec.latency_samples


@pytest.mark.parametrize("kind", ["vocoder", "ae"])
def test_neural_inverse_streams_exactly_as_it_decodes_whole(kind):
    torch.manual_seed(0)
    cfg = VocoderConfig(dim=32, depth=3, latent_dim=16 if kind == "ae" else 0)
    net = (MelAutoencoder if kind == "ae" else MelVocoder)(cfg).eval()
    frames = 48 if kind == "ae" else 192
    x = torch.randn(1, cfg.latent_dim or cfg.n_mels, frames)
    with torch.no_grad():
        whole = net(x)
    stream = StreamingVocoder(net)
    parts = [stream.push(x[..., i : i + 11]) for i in range(0, frames, 11)]
    assert parts[0].shape[-1] == 11 * (cfg.group if kind == "ae" else 1) * cfg.hop - stream.latency_samples
    y = torch.cat([*parts, stream.flush()], dim=-1)
    assert y.shape == whole.shape
    assert float((y - whole).abs().max()) <= 1e-5 * float(whole.abs().max())


def test_harmonic_peak_loss_pays_for_a_blurred_comb():
    """A tone with harmonics against the same spectral envelope without the comb (noise shaped like it):
    the peak term sees the comb's teeth missing, the tone itself costs nothing."""
    t = torch.arange(SR) / SR
    tone = sum(torch.sin(2 * torch.pi * 220 * k * t) / k for k in range(1, 12))[None] * 0.1
    spec = torch.fft.rfft(tone)
    env = torch.nn.functional.avg_pool1d(spec.abs()[None], 401, 1, 200)[0]
    blurred = torch.fft.irfft(env * torch.exp(2j * torch.pi * torch.rand(env.shape)), n=SR)
    blurred = blurred * tone.std() / blurred.std()
    assert float(harmonic_peak_loss(tone, tone)) < 1e-6
    assert float(harmonic_peak_loss(blurred, tone)) > 1.0


# the learned autoencoder inverse ships in no model: its run is slow (the vocoder's covers the trainer)
@pytest.mark.parametrize("kind", ["vocoder", pytest.param("ae", marks=pytest.mark.slow)])
def test_codec_training_steps_lower_the_losses(kind, flute):
    """Reconstruction steps lower the mel loss on a fixed batch; in the adversarial stage, discriminator
    steps lower its loss on that batch (it learns to tell the generator's output from the real thing)."""
    torch.manual_seed(0)
    vcfg = VocoderConfig(dim=32, depth=2, latent_dim=16 if kind == "ae" else 0)
    cfg = CodecTrainConfig(kind=kind, minutes=1.0, batch=2, crop_frames=32, lr=2e-3, adv_start=0.5)
    trainer = CodecTrainer(cfg, vcfg, MelConfig())
    rng = random.Random(0)
    n = cfg.crop_frames * 512
    batch = torch.from_numpy(
        np.stack([flute[s : s + n] for s in (rng.randrange(len(flute) - n) for _ in range(2))])
    )
    first = trainer.evaluate(batch)
    for _ in range(25):
        trainer.train_step(batch)
    after = trainer.evaluate(batch)
    assert after["mel"] < 0.8 * first["mel"], (first, after)
    assert not trainer.adversarial
    trainer.trained_s = cfg.minutes * 60  # into the adversarial stage
    assert trainer.adversarial
    with torch.no_grad():
        fake = trainer.generate(batch)
        before_d = float(d_loss(trainer.disc(batch), trainer.disc(fake)))
    stats, after_d = [], []
    for i in range(12):  # the adversarial loss oscillates step to step: judge its last four steps together
        stats.append(trainer.train_step(batch))
        if i >= 8:
            with torch.no_grad():
                after_d.append(float(d_loss(trainer.disc(batch), trainer.disc(fake))))
    assert all({"d", "adv", "fm"} <= set(s) for s in stats)
    assert np.mean(after_d) < before_d - 0.05, (before_d, after_d)
    if kind == "ae":  # RAVE's second stage: the encoder is frozen
        enc = [p.detach().clone() for p in trainer.net.enc_in.parameters()]
        trainer.train_step(batch)
        assert all(torch.equal(a, b) for a, b in zip(enc, trainer.net.enc_in.parameters()))


def test_shipped_codec_round_trips_a_melody_on_pitch(flute):
    """The codec in the package, offline: a flute melody over two octaves comes back on its notes."""
    assert SHIPPED_CODEC.is_file()
    codec = load_codec(SHIPPED_CODEC)
    assert codec.sample_rate == SR and SR / codec.hop <= 32
    target = note_track(melody(67), len(flute) // 512, 512, SR)
    clean = on_note(flute, target, SR)
    through = on_note(round_trip(codec, flute), target, SR)
    assert clean.sum() > 300
    assert (clean & through).sum() / clean.sum() >= 0.85


def test_fewer_griffinlim_iterations_keep_the_melody_and_travel_in_the_file(flute, tmp_path):
    """`with_griffinlim(iters=16)` changes only the inverse: the same tokens, another decode that still
    keeps the melody on its notes, and the setting is saved with the codec."""
    codec = load_codec(SHIPPED_CODEC)
    fast = codec.with_griffinlim(iters=16)
    assert fast.cfg.griffinlim.iters == 16 and codec.cfg.griffinlim.iters == 32
    x = torch.from_numpy(flute)[None, None]
    tokens = codec.encode(x)
    assert torch.equal(fast.encode(x), tokens)
    y_fast = decode_whole(fast, tokens)
    assert not torch.allclose(y_fast, decode_whole(codec, tokens))  # the iterations are really fewer
    target = note_track(melody(67), len(flute) // 512, 512, SR)
    clean = on_note(flute, target, SR)
    y = np.pad(y_fast[0, 0].numpy(), (0, max(0, len(flute) - y_fast.shape[-1])))[: len(flute)]
    assert (clean & on_note(y, target, SR)).sum() / clean.sum() >= 0.85
    fast.save(tmp_path / "fast.safetensors")
    assert load_codec(tmp_path / "fast.safetensors").cfg.griffinlim.iters == 16
    with pytest.raises(ValueError, match="iters"):
        codec.with_griffinlim(iters=0)


@pytest.mark.acceptance
def test_melody_check_of_every_lead_family_through_the_shipped_codec():
    codec = load_codec(SHIPPED_CODEC)
    report = melody_check(lambda a, sr: round_trip(codec, a), SR)
    assert len(report["leads"]) == len(LEADS) >= 5
    assert report["kept"] >= 0.85, report


def test_latents_on_the_mel_codec_are_normalised_and_a_new_lmdm_plays_them(tmp_path):
    """`train latents` with the codec file: tokens centred and unit-variance, the codec written beside them
    decodes them to what the shipped codec decodes the raw tokens to, and `build_model` makes an LMDM over
    it that streams 44.1 kHz audio."""
    from lmdm_live.live.stream import LMDMStream, StreamParams
    from lmdm_live.model.lmdm import LMDMConfig
    from lmdm_live.train.dataset import RenderConfig, add_sketch_controls, render_dataset
    from lmdm_live.train.latents import encode_dataset
    from lmdm_live.train.runs import build_model

    data = tmp_path / "solo"
    render_dataset(data, 3 * 4.0 / 3600, RenderConfig(sample_rate=SR, hop=2048, seconds=4.0, kind="solo"))
    add_sketch_controls(data)
    out_codec = tmp_path / "lat.codec.safetensors"
    ls = encode_dataset(data, SHIPPED_CODEC, ("train",), out_vae=out_codec)
    assert ls.latents[0].dtype == torch.float16  # stored at half size; training casts them back
    flat = torch.cat([z.flatten().float() for z in ls.latents])
    assert abs(float(flat.mean())) < 2e-3 and abs(float(flat.std()) - 1) < 2e-3
    shipped, scaled = load_codec(SHIPPED_CODEC), load_codec(out_codec)
    audio = torch.from_numpy(sf.read(data / "audio" / "000000.wav", dtype="float32")[0])[None, None]
    raw = shipped.encode(audio)
    tokens = scaled.encode(audio)
    assert torch.allclose(ls.latents[0].float(), tokens[0], atol=5e-3)
    # a second set encoded in the first one's token space (to train on both): same tokens, same codec
    joined = encode_dataset(
        data, out_codec, ("train",), out_vae=tmp_path / "b.codec.safetensors", normalise=False
    )
    assert torch.allclose(joined.latents[0].float(), ls.latents[0].float(), atol=5e-3)
    assert load_codec(tmp_path / "b.codec.safetensors").cfg == scaled.cfg
    assert torch.allclose(shipped.magnitude(raw), scaled.magnitude(tokens), rtol=1e-3, atol=1e-6)
    model = build_model("tiny", out_codec, LMDMConfig(mode="causal", context_frames=32, block_frames=8))
    assert model.codec.dim == 512 and model.sample_rate == SR and model.dit.cfg.io_channels == 512
    stream = LMDMStream(model, model.text_encoder(), seed=0, params=StreamParams.of("a solo flute melody"))
    first = stream.next_block()
    assert first.shape == (1, 8 * 2048 - stream.latency_samples) and np.isfinite(first).all()


def test_decoding_caps_tokens_out_of_range():
    """Log-power tokens make a generated error exponential: a token far above anything real must decode
    no louder than full scale allows, not 80 dB over it."""
    codec = load_codec(SHIPPED_CODEC)
    t = torch.arange(SR) / SR
    square = torch.sign(torch.sin(2 * torch.pi * 110 * t))[None, None]
    loudest = codec.decode(codec.encode(square)).abs().max()
    wild = codec.encode(square)
    wild[:, ::7] += 10.0  # far out of range in one band in seven
    out = codec.decode(wild)
    # at most every such band at full scale at once (18 of them), nothing like e^(10 * scale / 2) louder
    assert torch.isfinite(out).all() and out.abs().max() < 25 * loudest
    uncapped = replace(codec.cfg, mel=replace(codec.cfg.mel, log_ceiling=1e9))
    assert MelCodec(uncapped).decode(wild).abs().max() > 1000 * loudest
