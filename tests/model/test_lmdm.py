"""The streaming LMDM: cached block generation must equal the uncached masked reference, block after block."""

from __future__ import annotations

import pytest
import torch

from lmdm_live.model.bundle import LMDMModel
from lmdm_live.model.cache import KVCache
from lmdm_live.model.dit import DiT, DiTConfig, apply_rope
from lmdm_live.model.lmdm import (
    LMDM,
    Conditioning,
    LMDMConfig,
    branch_conditioning,
    chunk_mask,
    encdec_mask,
    query_tokens_per_block,
)
from lmdm_live.model.samplers import SamplerSettings, logsnr_schedule, sample_block

IO, EXTRA = 8, 2


def tiny_dit(seed: int = 0, extra: int = EXTRA, embed: int = 64, heads: int = 2, depth: int = 2) -> DiT:
    cfg = DiTConfig(
        io_channels=IO,
        embed_dim=embed,
        depth=depth,
        num_heads=heads,
        cond_token_dim=16,
        global_cond_dim=16,
        ff_mult=2,
        input_add_dim=1 + IO + extra,
    )
    torch.manual_seed(seed)
    dit = DiT(cfg)
    with torch.no_grad():  # zero-initialised layers (conv skips, input_add) must take part in the check
        for name, p in dit.named_parameters():
            if p.dim() > 1 and "gamma" not in name:
                p.normal_(0.0, 1.0 / p.shape[-1] ** 0.5 * 1.5)
            elif "norm" in name or "gamma" in name:
                p.uniform_(0.7, 1.3)
    return dit.eval()


def conditioning(dit: DiT, rows: int, seed: int = 1) -> Conditioning:
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randn(rows, 5, dit.cfg.cond_token_dim, generator=g)
    glob = torch.randn(rows, dit.cfg.global_cond_dim, generator=g)
    return Conditioning(dit.cross_kv(tokens), glob)


def run_blocks(lmdm: LMDM, cond, settings, n: int, cached: bool, extras: bool = False, seed: int = 5):
    g = torch.Generator().manual_seed(seed)
    ctx = torch.randn(1, IO, lmdm.cfg.context_frames, generator=g)
    ex = torch.randn(1, EXTRA, lmdm.cfg.context_frames, generator=g) if extras else None
    state = lmdm.new_state(cond.rows, ctx, ex)
    out = []
    for b in range(n):
        te = torch.randn(1, EXTRA, lmdm.cfg.block_frames, generator=g) if extras else None
        gen = torch.Generator().manual_seed(1000 + b)
        out.append(lmdm.generate(state, cond, settings, gen, target_extras=te, cached=cached))
    return torch.cat(out, dim=2), state


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max()).item()


@torch.no_grad()
@pytest.mark.parametrize("mode", ["encdec", "causal"])
@pytest.mark.parametrize("sampler", ["euler", "pingpong"])
def test_cached_equals_uncached(mode, sampler):
    dit = tiny_dit()
    lmdm = LMDM(dit, LMDMConfig(mode=mode, context_frames=12, block_frames=4))
    cond = conditioning(dit, 1)
    s = SamplerSettings(sampler=sampler, steps=3)
    fast, st = run_blocks(lmdm, cond, s, 6, cached=True)
    slow, _ = run_blocks(lmdm, cond, s, 6, cached=False)
    assert fast.shape == (1, IO, 24)
    assert rel_err(fast, slow) < 1e-4
    assert fast.abs().max() > 0.1  # the model really produced something
    assert st.blocks == 6


@torch.no_grad()
@pytest.mark.parametrize("mode", ["encdec", "causal"])
def test_cached_equals_uncached_guided_with_extras(mode):
    dit = tiny_dit(seed=3, embed=96, heads=3, depth=3)
    lmdm = LMDM(dit, LMDMConfig(mode=mode, context_frames=10, block_frames=5))
    cond = conditioning(dit, 2)
    s = SamplerSettings(sampler="pingpong", steps=4, cfg=3.0)
    fast, _ = run_blocks(lmdm, cond, s, 5, cached=True, extras=True)
    slow, _ = run_blocks(lmdm, cond, s, 5, cached=False, extras=True)
    assert rel_err(fast, slow) < 1e-4


@torch.no_grad()
def test_causal_rebootstrap_matches_reference():
    dit = tiny_dit(seed=7)
    lmdm = LMDM(dit, LMDMConfig(mode="causal", context_frames=8, block_frames=4))
    cond = conditioning(dit, 1)
    s = SamplerSettings(sampler="euler", steps=2)
    outs = []
    for cached in (True, False):
        state = lmdm.new_state(1, torch.randn(1, IO, 8, generator=torch.Generator().manual_seed(0)))
        blocks = []
        for b in range(6):
            if b == 3:
                state.rebootstrap()
            blocks.append(lmdm.generate(state, cond, s, torch.Generator().manual_seed(b), cached=cached))
        outs.append(torch.cat(blocks, dim=2))
    assert rel_err(outs[0], outs[1]) < 1e-4


@torch.no_grad()
def test_context_changes_the_output_and_mode_matters():
    """Guards against a cache that is silently ignored: the context must steer the block."""
    dit = tiny_dit()
    cond = conditioning(dit, 1)
    s = SamplerSettings(sampler="euler", steps=2)
    for mode in ("encdec", "causal"):
        lmdm = LMDM(dit, LMDMConfig(mode=mode, context_frames=8, block_frames=4))
        a = lmdm.generate(lmdm.new_state(1, torch.zeros(1, IO, 8)), cond, s, torch.Generator().manual_seed(0))
        b = lmdm.generate(lmdm.new_state(1, torch.ones(1, IO, 8)), cond, s, torch.Generator().manual_seed(0))
        assert (a - b).abs().max() > 1e-3


@torch.no_grad()
@pytest.mark.parametrize("mode", ["bidirectional", "encdec", "causal"])
def test_deterministic_per_seed(mode):
    dit = tiny_dit()
    lmdm = LMDM(dit, LMDMConfig(mode=mode, context_frames=8, block_frames=4))
    cond = conditioning(dit, 1)
    s = SamplerSettings(steps=3)
    a, _ = run_blocks(lmdm, cond, s, 3, cached=True)
    b, _ = run_blocks(lmdm, cond, s, 3, cached=True)
    c, _ = run_blocks(lmdm, cond, s, 3, cached=True, seed=6)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


@torch.no_grad()
def test_bidirectional_is_saos_outpainting():
    """Bidirectional mode's velocity is the plain SAOS forward over [renoised context ; target]."""
    dit = tiny_dit(extra=0)
    lmdm = LMDM(dit, LMDMConfig(mode="bidirectional", context_frames=6, block_frames=3))
    cond_tokens = torch.randn(1, 5, 16)
    glob = torch.randn(1, 16)
    cond = Conditioning(dit.cross_kv(cond_tokens), glob)
    state = lmdm.new_state(1, torch.randn(1, IO, 6))
    gen = torch.Generator().manual_seed(0)
    denoise = lmdm._bidirectional(state, cond, gen)
    eps = torch.randn(state.context.shape, generator=torch.Generator().manual_seed(0))
    x, t = torch.randn(1, IO, 3), 0.6
    window = torch.cat([(1 - t) * state.context + t * eps, x], dim=2)
    ref = dit(window, torch.tensor([t]), cond_tokens, glob)[:, :, 6:]
    assert rel_err(denoise(x, t, 0), ref) < 1e-5


@torch.no_grad()
@pytest.mark.parametrize("mode", ["encdec", "causal"])
def test_cache_memory_constant_over_500_blocks(mode):
    dit = tiny_dit(embed=32, heads=1, depth=1)
    lmdm = LMDM(dit, LMDMConfig(mode=mode, context_frames=4, block_frames=2))
    cond = conditioning(dit, 1)
    state = lmdm.new_state(1)
    cache = state.cache
    ptr, nbytes = cache.k.data_ptr(), cache.nbytes()
    s = SamplerSettings(sampler="euler", steps=1)
    for b in range(500):
        block = lmdm.generate(state, cond, s, torch.Generator().manual_seed(b))
    assert state.cache is cache and cache.k.data_ptr() == ptr and cache.nbytes() == nbytes
    assert state.context.shape == (1, IO, 4) and state.history == []
    assert torch.isfinite(block).all()
    # rotated keys stay at bounded positions: the cached keys' norms do not drift over a long stream
    assert cache.length == 4  # the whole context (Block-Causal keeps one chunk beyond its target's sight)


@torch.no_grad()
def test_guidance_needs_its_rows_and_cache_batch_is_checked():
    dit = tiny_dit()
    lmdm = LMDM(dit, LMDMConfig(mode="causal", context_frames=8, block_frames=4))
    state = lmdm.new_state(1)
    with pytest.raises(ValueError, match="run 2 rows; the conditioning has 1"):
        lmdm.generate(state, conditioning(dit, 1), SamplerSettings(cfg=2.0), torch.Generator())
    with pytest.raises(ValueError, match="run 3 rows; the conditioning has 2"):
        tempo = SamplerSettings(cfg=2.0, tempo_guidance=1.0)
        lmdm.generate(state, conditioning(dit, 2), tempo, torch.Generator())
    with pytest.raises(ValueError, match="another CFG batch"):
        lmdm.generate(state, conditioning(dit, 2), SamplerSettings(cfg=2.0), torch.Generator())


def test_config_validation():
    with pytest.raises(ValueError, match="causal mode"):
        LMDMConfig(mode="causal", context_frames=10, block_frames=4)
    with pytest.raises(ValueError, match="mode must be"):
        LMDMConfig(mode="wat")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="input_add_embed"):
        LMDM(
            tiny_dit(extra=0).__class__(DiTConfig(io_channels=IO, embed_dim=64, num_heads=2, depth=1)),
            LMDMConfig(mode="encdec"),
        )


def test_query_tokens_per_block():
    assert query_tokens_per_block(LMDMConfig("bidirectional", 192, 48), 8) == 241 * 8
    assert query_tokens_per_block(LMDMConfig("encdec", 192, 48), 8) == 192 + 49 * 8
    assert query_tokens_per_block(LMDMConfig("causal", 192, 48), 8) == 48 + 49 * 8


def test_masks():
    m = encdec_mask(2, 4)
    assert m.tolist() == [[True, True, False, False], [True, True, False, False], [True] * 4, [True] * 4]
    c = torch.arange(4)
    assert chunk_mask(c, c, 2).tolist() == [
        [True, False, False, False],
        [True, True, False, False],
        [False, True, True, False],
        [False, False, True, True],
    ]


def test_cache_rotate_is_a_position_shift():
    dit = tiny_dit()
    rope = dit.rope
    k = torch.randn(1, 1, 2, 6, dit.cfg.head_dim)
    at10 = apply_rope(k, rope(torch.arange(10, 16)))
    cache = KVCache.allocate(1, 1, 2, 8, dit.cfg.head_dim)
    cache.write([(at10[0], at10[0])])
    cache.rotate(rope(torch.tensor([-7])))
    assert torch.allclose(cache.k[0, :, :, :6], apply_rope(k, rope(torch.arange(3, 9)))[0], atol=1e-5)
    cache.slide(2)
    assert cache.length == 4
    assert torch.allclose(
        cache.k[0, :, :, :4], apply_rope(k, rope(torch.arange(3, 9)))[0, :, :, 2:], atol=1e-5
    )
    with pytest.raises(ValueError, match="overflow"):
        cache.write([(torch.zeros(1, 2, 5, dit.cfg.head_dim),) * 2], start=4)


def velocity_to(target: torch.Tensor):
    """The exact rectified-flow velocity field whose every trajectory ends at `target`."""
    return lambda x, t, i: (x - target) / t


@pytest.mark.parametrize("sampler", ["euler", "pingpong"])
def test_samplers_reach_the_target(sampler):
    target = torch.randn(1, 4, 6)
    x = torch.randn(1, 4, 6)
    out = sample_block(velocity_to(target), x, SamplerSettings(sampler=sampler, steps=5), torch.Generator())
    assert torch.allclose(out, target, atol=1e-5)


@pytest.mark.parametrize("sampler", ["euler", "pingpong"])
@pytest.mark.parametrize("cfg_pp", [None, 0.8])
def test_guidance_extrapolates(sampler, cfg_pp):
    a, b = torch.randn(1, 4, 6), torch.randn(1, 4, 6)
    scale = 3.0

    def denoise(x, t, i):
        return torch.cat([(x[:1] - a) / t, (x[1:] - b) / t])

    s = SamplerSettings(sampler=sampler, steps=4, cfg=scale, cfg_pp=cfg_pp)
    out = sample_block(
        lambda x, t, i: denoise(x.expand(2, -1, -1), t, i), torch.randn(1, 4, 6), s, torch.Generator()
    )
    lam = cfg_pp if cfg_pp is not None else scale
    assert torch.allclose(out, b + lam * (a - b), atol=1e-4)


@pytest.mark.parametrize("cfg", [1.0, 3.0])
def test_tempo_guidance_extrapolates_from_the_row_without_tempo(cfg):
    # rows: conditional (toward a), [unconditional (toward b)], conditional without tempo (toward c)
    a, b, c = torch.randn(1, 4, 6), torch.randn(1, 4, 6), torch.randn(1, 4, 6)
    w = 4.0
    targets = [a, b, c] if cfg != 1.0 else [a, c]

    def denoise(x, t, i):
        return torch.cat([(x[k : k + 1] - y) / t for k, y in enumerate(targets)])

    s = SamplerSettings(sampler="euler", steps=4, cfg=cfg, tempo_guidance=w)
    assert s.rows == len(targets)
    out = sample_block(
        lambda x, t, i: denoise(x.expand(s.rows, -1, -1), t, i), torch.randn(1, 4, 6), s, torch.Generator()
    )
    guided = b + cfg * (a - b) if cfg != 1.0 else a
    assert torch.allclose(out, guided + w * (a - c), atol=1e-4)
    with pytest.raises(ValueError, match="tempo_guidance"):
        SamplerSettings(tempo_guidance=-1.0)


def test_sketch_guidance_extrapolates_from_its_own_row_after_tempos():
    # rows: conditional (a), unconditional (b), without tempo (c), without the sketch (d)
    a, b, c, d = (torch.randn(1, 4, 6) for _ in range(4))
    targets = [a, b, c, d]

    def denoise(x, t, i):
        return torch.cat([(x[k : k + 1] - y) / t for k, y in enumerate(targets)])

    s = SamplerSettings(sampler="euler", steps=3, cfg=2.0, tempo_guidance=4.0, sketch_guidance=6.0)
    assert s.rows == 4
    out = sample_block(
        lambda x, t, i: denoise(x.expand(4, -1, -1), t, i), torch.randn(1, 4, 6), s, torch.Generator()
    )
    assert torch.allclose(out, b + 2.0 * (a - b) + 4.0 * (a - c) + 6.0 * (a - d), atol=1e-4)
    sketch_only = SamplerSettings(sampler="euler", steps=3, cfg=2.0, sketch_guidance=6.0)
    targets[:] = [a, b, d]
    out = sample_block(
        lambda x, t, i: denoise(x.expand(3, -1, -1), t, i),
        torch.randn(1, 4, 6),
        sketch_only,
        torch.Generator(),
    )
    assert torch.allclose(out, b + 2.0 * (a - b) + 6.0 * (a - d), atol=1e-4)
    with pytest.raises(ValueError, match="sketch_guidance"):
        SamplerSettings(sketch_guidance=60.0)


def test_guidance_rows_drop_their_own_channels():
    model = LMDMModel.preset("tiny", lmdm=LMDMConfig(mode="causal", context_frames=8, block_frames=4),
                             extras={"tempo": True, "sketch": True})  # fmt: skip
    off = model.layout.offsets()
    cross = torch.randn(1, 3, model.dit.cfg.cond_token_dim)
    s = SamplerSettings(cfg=2.0, tempo_guidance=3.0, sketch_guidance=5.0)
    cond = branch_conditioning(model.dit, cross, None, s, off["tempo"], [off["sketch"], off["tone"]])
    keep = cond.extras_keep
    assert keep.shape[0] == 4 and (keep[:2] == 1).all()
    assert (keep[2, off["tempo"]] == 0).all() and (keep[2, off["sketch"]] == 1).all()
    assert (keep[3, off["sketch"]] == 0).all() and (keep[3, off["tempo"]] == 1).all()


def test_logsnr_schedule():
    ts = logsnr_schedule(8)
    assert ts[0] == 1.0 and ts[-1] == 0.0 and len(ts) == 9
    assert all(x > y for x, y in zip(ts[:-1], ts[1:], strict=True))
    with pytest.raises(ValueError):
        logsnr_schedule(0)


@pytest.mark.parametrize("sampler", ["euler", "pingpong"])
def test_cfg_pp_reanchors_on_the_unconditional_branch(sampler):
    """One CFG++ step: x1 = x0_guided + t1 * (next - x0_uncond), with next = x (Euler) or fresh noise."""
    a, b, x = torch.randn(1, 4, 6), torch.randn(1, 4, 6), torch.randn(1, 4, 6)
    seen = []

    def denoise(xx, t, i):
        seen.append(xx[:1].clone())
        return torch.cat([(xx[:1] - a) / t, (xx[1:] - b) / t])

    lam = 0.9
    s = SamplerSettings(sampler=sampler, steps=2, cfg_pp=lam)
    sample_block(lambda xx, t, i: denoise(xx.expand(2, -1, -1), t, i), x, s, torch.Generator().manual_seed(3))
    t1 = logsnr_schedule(2)[1]
    nxt = x if sampler == "euler" else torch.randn(1, 4, 6, generator=torch.Generator().manual_seed(3))
    assert torch.allclose(seen[1], b + lam * (a - b) + t1 * (nxt - b), atol=1e-5)


@torch.no_grad()
@pytest.mark.parametrize("mode", ["encdec", "causal"])
def test_ejection_and_empty_start_match_reference(mode):
    """A stream that starts with no context and later ejects old frames stays equal to its reference."""
    dit = tiny_dit(seed=11)
    lmdm = LMDM(dit, LMDMConfig(mode=mode, context_frames=8, block_frames=4))
    cond = conditioning(dit, 1)
    s = SamplerSettings(sampler="pingpong", steps=2)
    outs = []
    for cached in (True, False):
        state = lmdm.new_state(1)
        assert state.mask.sum() == 0
        blocks = []
        for b in range(6):
            if b == 4:
                state.eject(6)
                assert state.mask[0, 0].tolist() == [0.0] * 6 + [1.0] * 2
            blocks.append(lmdm.generate(state, cond, s, torch.Generator().manual_seed(b), cached=cached))
        outs.append(torch.cat(blocks, dim=2))
    assert rel_err(outs[0], outs[1]) < 1e-4


@torch.no_grad()
def test_ejection_changes_what_follows():
    dit = tiny_dit(seed=11)
    lmdm = LMDM(dit, LMDMConfig(mode="encdec", context_frames=8, block_frames=4))
    cond = conditioning(dit, 1)
    s = SamplerSettings(sampler="euler", steps=2)
    ctx = torch.randn(1, IO, 8, generator=torch.Generator().manual_seed(0))
    kept, ejected = lmdm.new_state(1, ctx), lmdm.new_state(1, ctx)
    ejected.eject(4)
    a = lmdm.generate(kept, cond, s, torch.Generator().manual_seed(0))
    b = lmdm.generate(ejected, cond, s, torch.Generator().manual_seed(0))
    assert (a - b).abs().max() > 1e-3


@torch.no_grad()
def test_resize_switches_guidance_mid_stream():
    dit = tiny_dit()
    lmdm = LMDM(dit, LMDMConfig(mode="causal", context_frames=8, block_frames=4))
    state = lmdm.new_state(1)
    lmdm.generate(state, conditioning(dit, 1), SamplerSettings(steps=2), torch.Generator())
    lmdm.resize(state, 2)
    out = lmdm.generate(state, conditioning(dit, 2), SamplerSettings(steps=2, cfg=2.0), torch.Generator())
    assert state.cache.batch == 2 and torch.isfinite(out).all()


def test_cache_room_is_bounded():
    """Queries write their own K/V into the cache's room; more queries than room is an error, not a realloc."""
    dit = tiny_dit()
    cache = KVCache.allocate(dit.cfg.depth, 1, dit.cfg.num_heads, 4, dit.cfg.head_dim, room=3)
    assert cache.capacity == 4 and cache.k.shape[3] == 7
    cache.extend(4)
    cond = conditioning(dit, 1)
    rope = dit.rope(torch.arange(4))
    with torch.no_grad(), pytest.raises(ValueError, match="room"):
        dit.run(torch.randn(1, 4, dit.cfg.embed_dim), rope, cond.cross, cache.slots())
    with pytest.raises(ValueError, match="overflow"):
        cache.extend(8)


@torch.no_grad()
@pytest.mark.parametrize("draw", range(6))
def test_cached_equals_uncached_random_configs(draw):
    """Random small shapes, windows, extras and guidance: cached == uncached reference in both modes."""
    import random

    r = random.Random(draw)
    embed, heads = r.choice([(64, 2), (96, 3), (128, 2), (128, 4)])
    extra = r.choice([0, 1, 3])
    cfg = DiTConfig(
        io_channels=r.choice([4, 8]),
        embed_dim=embed,
        depth=r.randint(1, 3),
        num_heads=heads,
        cond_token_dim=16,
        global_cond_dim=16,
        ff_mult=2,
        input_add_dim=0,
    )
    cfg = DiTConfig(**{**cfg.__dict__, "input_add_dim": 1 + cfg.io_channels + extra})
    torch.manual_seed(draw)
    dit = DiT(cfg)
    with torch.no_grad():
        for p in dit.parameters():
            if p.dim() > 1:
                p.normal_(0.0, 1.5 / p.shape[-1] ** 0.5)
    t_len = r.choice([2, 3, 5])
    c_len = t_len * r.choice([2, 3, 4])
    rows = r.choice([1, 2])
    s = SamplerSettings(
        sampler=r.choice(["euler", "pingpong"]), steps=r.randint(1, 4), cfg=2.5 if rows == 2 else 1.0
    )
    cond = conditioning(dit, rows, seed=draw)
    g = torch.Generator().manual_seed(draw)
    ctx = torch.randn(1, cfg.io_channels, c_len, generator=g)
    ex = [torch.randn(1, extra, t_len, generator=g) if extra else None for _ in range(5)]
    for mode in ("encdec", "causal"):
        lmdm = LMDM(dit, LMDMConfig(mode=mode, context_frames=c_len, block_frames=t_len))
        outs = []
        for cached in (True, False):
            state = lmdm.new_state(rows, ctx)
            outs.append(
                torch.cat(
                    [
                        lmdm.generate(
                            state,
                            cond,
                            s,
                            torch.Generator().manual_seed(b),
                            target_extras=ex[b],
                            cached=cached,
                        )
                        for b in range(5)
                    ],
                    dim=2,
                )
            )
        assert rel_err(outs[0], outs[1]) < 1e-4, (mode, cfg, c_len, t_len, rows)


@torch.no_grad()
def test_step_window_is_recorded_and_used(tmp_path):
    """The authors' Block-Causal target sees w chunks at steps >= 1, ours w-1: a checkpoint says which, and
    the stream runs what it says (the two differ from the first block's second step on)."""
    from lmdm_live.model.bundle import LMDMModel

    outs = {}
    for chunks in (None, 3):
        window = LMDMConfig(mode="causal", context_frames=12, block_frames=4, step_chunks=chunks)
        model = LMDMModel.preset("tiny", lmdm=window, seed=0)
        model.save(tmp_path / f"m{chunks}.safetensors")
        loaded = LMDMModel.load(tmp_path / f"m{chunks}.safetensors")
        assert loaded.lmdm.step_chunks == chunks and loaded.lmdm.target_chunks == (chunks or 2)
        lmdm = LMDM(loaded.dit, loaded.lmdm)
        cond = conditioning_for(loaded.dit)
        outs[chunks], _ = run_blocks_io(lmdm, cond, SamplerSettings("euler", steps=3), 3)
    assert rel_err(outs[None], outs[3]) > 1e-3
    with pytest.raises(ValueError, match="step_chunks"):
        LMDMConfig(mode="causal", context_frames=12, block_frames=4, step_chunks=1)


def conditioning_for(dit: DiT) -> Conditioning:
    g = torch.Generator().manual_seed(2)
    return Conditioning(dit.cross_kv(torch.randn(1, 5, dit.cfg.cond_token_dim, generator=g)), None)


def run_blocks_io(lmdm: LMDM, cond, settings, n: int):
    g = torch.Generator().manual_seed(5)
    state = lmdm.new_state(1, torch.randn(1, lmdm.dit.cfg.io_channels, lmdm.cfg.context_frames, generator=g))
    out = [lmdm.generate(state, cond, settings, torch.Generator().manual_seed(b)) for b in range(n)]
    return torch.cat(out, dim=2), state


@pytest.mark.parametrize("with_extras", [False, True])
def test_chunks_velocity_is_the_cached_stream_teacher_forced(with_extras):
    """Stage 1's K-target pass gives, for every target chunk, the velocity the stream's cache gives after
    playing the clean chunks before it: at step 0 (the fused step) and later steps, past several slides."""
    cfg = LMDMConfig(mode="causal", context_frames=12, block_frames=3)  # w = 4
    lmdm = LMDM(tiny_dit(3), cfg)
    cond = conditioning(lmdm.dit, 1)
    c, t, k_chunks = 12, 3, 7  # 7 targets: the window slides 6 times past the bootstrap
    g = torch.Generator().manual_seed(11)
    clean = torch.randn(1, IO, c + k_chunks * t, generator=g)
    ext = torch.randn(1, EXTRA, c + k_chunks * t, generator=g) if with_extras else None
    x_t = torch.randn(1, IO, k_chunks * t, generator=g)
    levels = torch.rand(1, k_chunks, generator=g)
    n = c + (k_chunks - 1) * t
    frames = lmdm._frames(torch.ones(1, 1, n), clean[..., :n], None if ext is None else ext[..., :n])
    tgt_ext = None if ext is None else ext[..., c:]
    with torch.no_grad():
        multi = lmdm.chunks_velocity(frames, x_t, levels, cond, tgt_ext)
        state = lmdm.new_state(1, clean[..., :c], None if ext is None else ext[..., :c])
        for k in range(k_chunks):
            sl = slice(k * t, (k + 1) * t)
            e = None if tgt_ext is None else tgt_ext[..., sl]
            denoise = lmdm.denoiser(state, cond, torch.Generator().manual_seed(0), e)
            first = denoise(x_t[..., sl], float(levels[0, k]), 0)  # fused step: the pending chunk enters
            later = denoise(x_t[..., sl], float(levels[0, k]), 1)
            for v in (first, later):
                err = (v - multi[..., sl]).abs().max() / multi[..., sl].abs().max()
                assert err < 1e-5, (k, float(err))
            lmdm.advance(state, clean[..., c + k * t : c + (k + 1) * t], e)
    # a target must not see its own clean chunk: changing it leaves that target's velocity alone
    bumped = frames.clone()
    bumped[:, 1 : 1 + IO, c : c + t] += 1.0  # the clean copy of target 0
    with torch.no_grad():
        again = lmdm.chunks_velocity(bumped, x_t, levels, cond, tgt_ext)
    assert torch.allclose(again[..., :t], multi[..., :t], atol=1e-6)
    assert not torch.allclose(again[..., t : 2 * t], multi[..., t : 2 * t], atol=1e-3)
