"""LMDMStream: same checkpoint + seed + schedule of changes by block index => bit-identical audio."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lmdm_live.live.stream import LMDMStream, StreamParams, block_seed, render, replace
from lmdm_live.model.bundle import LMDMModel
from lmdm_live.model.lmdm import LMDMConfig
from lmdm_live.model.samplers import SamplerSettings, logsnr_schedule

WINDOW = LMDMConfig(mode="causal", context_frames=8, block_frames=4)


@pytest.fixture(scope="module")
def model():
    return LMDMModel.preset("tiny", lmdm=WINDOW, seed=0)


def play(model, text, seed=1, blocks=6, live=False, decode=True):
    s = LMDMStream(
        model, text, seed=seed, params=StreamParams.of("deep techno", sampler=SamplerSettings(steps=2))
    )
    changes = {
        2: StreamParams.of({"deep techno": 1.0, "ambient pads": 0.5}, sampler=SamplerSettings(steps=2)),
        3: StreamParams.of("ambient pads", sampler=SamplerSettings(steps=2, cfg=2.0), eject_frames=4),
        5: StreamParams.of("ambient pads", sampler=SamplerSettings("euler", steps=3)),
    }
    out = []
    if not live:
        for b, p in changes.items():
            s.at(b, p)
    for b in range(blocks):
        if live and b in changes:
            s.set(changes[b])
        out.append(s.next_block() if decode else s.next_latents().numpy()[0])
    return np.concatenate(out, axis=1), s


def test_bit_identical_with_schedule(model, text):
    a, sa = play(model, text)
    b, _ = play(model, text)
    live, _ = play(model, text, live=True)
    assert a.dtype == np.float32 and a.shape[0] == 1
    assert np.array_equal(a, b)
    assert np.array_equal(a, live)  # live changes at the same block indices give the same audio
    other, _ = play(model, text, seed=2)
    assert not np.array_equal(a, other)
    assert sa.block_index == 6 and sa.nonfinite_blocks == 0
    assert np.abs(a).max() > 0


def test_audio_length_follows_the_decoder_latency(model, text):
    s = LMDMStream(model, text, seed=0, params=StreamParams.of("x", sampler=SamplerSettings(steps=1)))
    audio = render(s, 3)
    assert audio.shape == (1, 3 * WINDOW.block_frames * model.hop)


def test_prompt_blending_uses_the_weights(model, text):
    def latents(prompt):
        s = LMDMStream(
            model,
            text,
            seed=3,
            params=StreamParams.of(prompt, sampler=SamplerSettings(steps=2)),
            decode=False,
        )
        return torch.cat([s.next_latents() for _ in range(2)], dim=2)

    only_a = latents("rain on a tin roof")
    assert torch.equal(only_a, latents({"rain on a tin roof": 1.0, "brass band": 0.0}))
    assert torch.equal(only_a, latents({"rain on a tin roof": 3.0}))  # weights are normalised
    assert not torch.equal(only_a, latents({"rain on a tin roof": 1.0, "brass band": 1.0}))


def test_dominant_prompt_change_ejects_old_context(model, text):
    s = LMDMStream(model, text, params=StreamParams.of("a", sampler=SamplerSettings(steps=1)), decode=False)
    for _ in range(3):
        s.next_latents()
    assert s.state.mask.all()
    s.set(StreamParams.of({"a": 1.0, "b": 0.5}, sampler=SamplerSettings(steps=1)))  # same dominant prompt
    s.next_latents()
    assert s.state.mask.all()
    s.set(StreamParams.of({"a": 0.5, "b": 1.0}, sampler=SamplerSettings(steps=1), eject_frames=6))
    s.next_latents()  # 6 oldest of 8 frames ejected, then the window slid by one block of 4
    assert s.state.mask[0, 0].tolist() == [0.0, 0.0] + [1.0] * 6


def test_a_transition_drops_whole_chunks_rebuilds_the_cache_and_uses_cfg_pp(model, text):
    """The paper's recipe by default: all context chunks but the newest go, the cache is rebuilt, and the
    transition's blocks (until the old context has left the window) sample with CFG++ instead of CFG."""
    guided = SamplerSettings("euler", steps=2, cfg=3.0)
    c, t = WINDOW.context_frames, WINDOW.block_frames

    def run(second: StreamParams, explicit: dict | None = None):
        s = LMDMStream(model, text, seed=4, params=StreamParams.of("a", sampler=guided), decode=False)
        s.at(2, second)
        for b, p in (explicit or {}).items():
            s.at(b, p)
        out = []
        for b in range(6):
            out.append(s.next_latents())
            if b == 2:  # C - T frames ejected before the block, then the window slid by T
                assert s.state.mask[0, 0].tolist() == [0.0] * (c - 2 * t) + [1.0] * (2 * t)
        return torch.cat(out, dim=2)

    lam = 0.7
    recipe = run(StreamParams.of("b", sampler=guided, transition_cfg_pp=lam))
    # the same stream spelled out: CFG++ scheduled for the c/t transition blocks, then back to CFG
    pp = replace(guided, cfg_pp=lam)
    spelled = run(
        StreamParams.of("b", sampler=pp, transition_cfg_pp=None),
        {2 + c // t: StreamParams.of("b", sampler=guided, transition_cfg_pp=None)},
    )
    assert torch.equal(recipe, spelled)
    plain = run(StreamParams.of("b", sampler=guided, transition_cfg_pp=None))
    assert torch.equal(recipe[..., : 2 * t], plain[..., : 2 * t])
    assert not torch.allclose(recipe[..., 2 * t :], plain[..., 2 * t :])
    assert (
        StreamParams.from_dict(StreamParams.of("b", transition_cfg_pp=lam).to_dict()).transition_cfg_pp == lam
    )


def test_checkpoint_round_trip_gives_the_same_stream(model, text, tmp_path):
    path = tmp_path / "tiny.safetensors"
    model.save(path)
    loaded = LMDMModel.load(path)
    assert loaded.config() == model.config()
    a, _ = play(model, text, blocks=3)
    b, _ = play(loaded, text, blocks=3)
    assert np.array_equal(a, b)


def test_nan_from_the_model_gives_silence_not_a_crash(text):
    m = LMDMModel.preset("tiny", lmdm=WINDOW, seed=5)
    s = LMDMStream(m, text, params=StreamParams.of("x", sampler=SamplerSettings(steps=1)), decode=False)
    s.next_latents()
    w = m.dit.transformer.project_out.weight
    saved = w.detach().clone()
    with torch.no_grad():
        w[0, 0] = float("nan")
    bad = s.next_latents()
    assert torch.equal(bad, torch.zeros_like(bad)) and s.nonfinite_blocks == 1
    assert torch.isfinite(s.state.frames).all()
    with torch.no_grad():
        w.copy_(saved)
    good = s.next_latents()
    assert torch.isfinite(good).all() and good.abs().max() > 0


def test_params_validation():
    with pytest.raises(ValueError, match=">= 0"):
        StreamParams.of({"a": -1.0})
    with pytest.raises(ValueError, match="all be 0"):
        StreamParams.of({"a": 0.0})
    assert StreamParams.of({"a": 1.0, "b": 2.0}).dominant == "b"


def test_block_seeds_are_distinct():
    seeds = {block_seed(s, b) for s in range(4) for b in range(1000)}
    assert len(seeds) == 4000 and all(0 <= x < 2**63 for x in seeds)


def test_conditioning_cache_is_a_small_lru(model, text):
    """Fast prompt changes must not grow memory: the cache keeps the newest few and reuses a hit."""
    from lmdm_live.live.stream import COND_CACHE_SIZE

    s = LMDMStream(model, text, params=StreamParams.of("p0", sampler=SamplerSettings(steps=1)), decode=False)
    first = s._conditioning(s.params)
    for i in range(1, 3 * COND_CACHE_SIZE):
        s._conditioning(StreamParams.of(f"p{i}", sampler=SamplerSettings(steps=1)))
        s._conditioning(s.params)  # kept warm: the most recently used entry is never evicted
    assert len(s._cond_cache) == COND_CACHE_SIZE
    assert s._conditioning(s.params) is first
    assert (("p1", 1.0),) not in {k[0] for k in s._cond_cache}


@pytest.mark.parametrize("preset", ["tiny", "tiny-mel"])
def test_restore_regenerates_the_same_blocks(preset, model, text):
    """A snapshot at a block boundary makes the same audio again, bit for bit, through a prompt change,
    and a different change from there takes effect at once (what the engine does with unheard blocks)."""
    m = model if preset == "tiny" else LMDMModel.preset("tiny-mel", lmdm=WINDOW, seed=0)
    s = LMDMStream(m, text, seed=3, params=StreamParams.of("deep techno", sampler=SamplerSettings(steps=2)))
    s.next_block()
    s.next_block()
    snap = s.snapshot()
    s.at(3, StreamParams.of("ambient pads", sampler=SamplerSettings(steps=2)))
    first = [s.next_block() for _ in range(3)]
    s.restore(snap)
    assert s.block_index == 2 and not s.schedule
    s.at(3, StreamParams.of("ambient pads", sampler=SamplerSettings(steps=2)))
    again = [s.next_block() for _ in range(3)]
    for a, b in zip(first, again):
        assert np.array_equal(a, b)
    s.restore(snap)  # the snapshot stays usable: now a change at block 2 itself
    s.set(StreamParams.of("jungle breaks", sampler=SamplerSettings(steps=2)))
    changed = s.next_block()
    assert not np.allclose(changed, first[0])


def test_tempo_guidance_is_the_stream_with_its_clock_pushed_away_from_the_same_stream_without(text):
    """The third row is the conditional row with its tempo channels zeroed in the context and the target:
    the stream equals two streams sampled by hand as one, one with the clock and one without, through
    blocks past the window's first slide (the zeroed channels must hold in the cache too)."""
    model = LMDMModel.preset("tiny", lmdm=WINDOW, seed=0, extras={"tempo": True})
    w, blocks = 3.0, 5
    guided = SamplerSettings("euler", steps=3, cfg=2.0, tempo_guidance=w)
    s = LMDMStream(
        model, text, seed=5, params=StreamParams.of("techno", sampler=guided, bpm=128.0), decode=False
    )
    got = torch.cat([s.next_latents() for _ in range(blocks)], dim=2)
    assert s.state.cache.batch == 3

    plain = replace(guided, tempo_guidance=0.0)
    clock = LMDMStream(
        model, text, seed=5, params=StreamParams.of("techno", sampler=plain, bpm=128.0), decode=False
    )
    free = LMDMStream(model, text, seed=5, params=StreamParams.of("techno", sampler=plain), decode=False)
    ts, io, t_len = logsnr_schedule(3), model.dit.cfg.io_channels, WINDOW.block_frames
    want = []
    for k in range(blocks):
        extras = [st._named_extras(st.params, None, None) for st in (clock, free)]
        gen = torch.Generator().manual_seed(block_seed(5, k))
        x = torch.randn((1, io, t_len), generator=gen)
        den = [
            st.lmdm.denoiser(st.state, st._conditioning(st.params), gen, e)
            for st, e in zip((clock, free), extras, strict=True)
        ]
        for i in range(3):
            v, v0 = (d(x.expand(2, -1, -1), ts[i], i) for d in den)
            g = v[1:] + 2.0 * (v[:1] - v[1:]) + w * (v[:1] - v0[:1])
            x = x - ts[i] * g + ts[i + 1] * g
        for st, e in zip((clock, free), extras, strict=True):
            st.lmdm.advance(st.state, x, e)
        clock.beat += t_len * clock.beats_per_frame
        want.append(x)
    want = torch.cat(want, dim=2)
    assert float((got - want).norm() / want.norm()) < 1e-5
    # and it changes the music: the clock's stream alone is far from it
    alone = LMDMStream(
        model, text, seed=5, params=StreamParams.of("techno", sampler=plain, bpm=128.0), decode=False
    )
    unguided = torch.cat([alone.next_latents() for _ in range(blocks)], dim=2)
    assert float((unguided - want).norm() / want.norm()) > 0.05


def test_tempo_guidance_runs_no_third_row_without_a_clock(text, model):
    guided = SamplerSettings("euler", steps=2, cfg=2.0, tempo_guidance=3.0)
    with_tempo = LMDMModel.preset("tiny", lmdm=WINDOW, seed=0, extras={"tempo": True})
    for m, bpm in ((with_tempo, None), (model, 120.0)):  # no bpm; a model without tempo channels
        s = LMDMStream(
            m, text, seed=1, params=StreamParams.of("techno", sampler=guided, bpm=bpm), decode=False
        )
        s.next_latents()
        assert s.state.cache.batch == 2


def test_sketch_guidance_runs_its_row_only_while_a_sketch_plays(text):
    from lmdm_live.model.extras import sketch_channels

    model = LMDMModel.preset("tiny", lmdm=WINDOW, seed=0, extras={"sketch": True})
    with torch.no_grad():  # the preset's extra inputs start at zero: give the sketch a say
        model.dit.to_input_add_embed.weight.normal_(0, 0.05, generator=torch.Generator().manual_seed(1))
    n = WINDOW.block_frames
    hum = sketch_channels(
        torch.full((n,), 62.0), torch.ones(n), torch.full((n,), -20.0), torch.full((n,), 1e3)
    )
    plain = SamplerSettings("euler", steps=2, cfg=2.0)

    def play(sampler, sketch):
        s = LMDMStream(model, text, seed=3, params=StreamParams.of("a melody", sampler=sampler), decode=False)
        out = torch.cat([s.next_latents(sketch=sketch) for _ in range(3)], dim=2)
        return out, s.state.cache.batch

    guided = replace(plain, sketch_guidance=4.0)
    (a, rows_a), (b, rows_b) = play(guided, None), play(plain, None)
    assert rows_a == rows_b == 2 and torch.equal(a, b)  # no sketch: no row, the same music
    (c, rows_c), (d, _) = play(guided, hum), play(plain, hum)
    assert rows_c == 3  # conditional, unconditional, and the conditional without its sketch
    assert float((c - d).norm() / d.norm()) > 0.05  # pushed further toward what the sketch adds
