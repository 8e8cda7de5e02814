import json
from pathlib import Path

import pytest
import torch
from torch import nn

from lmdm_live.model.oobleck import (
    OobleckConfig,
    OobleckDecoder,
    OobleckVAE,
    SnakeBeta,
    WNConv1d,
    WNConvTranspose1d,
    fold_weight_norm,
    load_oobleck_state_dict,
)
from lmdm_live.model.oobleck_stream import StreamingDecoder

SHAPES = Path(__file__).resolve().parents[1] / "data" / "sao-small" / "state_dict_shapes.json"


def tiny(causal: bool, audio_channels: int = 2, use_snake: bool = True) -> OobleckConfig:
    return OobleckConfig(
        in_channels=audio_channels,
        out_channels=audio_channels,
        channels=8,
        c_mults=(1, 2, 4),
        strides=(2, 4, 4),
        latent_dim=16,
        use_snake=use_snake,
        causal=causal,
    )


def randomize(model: nn.Module, seed: int = 0, gain: float = 0.5) -> nn.Module:
    """Non-trivial weights: random SnakeBeta alpha/beta, random directions and gains, non-zero biases.
    The gain keeps the signal O(0.1-1) so that float32 rounding stays far below the tolerances."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(("alpha", "beta")):
                p.copy_(0.5 * torch.randn(p.shape, generator=g))
            elif name.endswith("weight_v"):
                p.copy_(torch.randn(p.shape, generator=g))
            elif name.endswith("weight_g"):
                p.copy_(gain * (0.5 + torch.rand(p.shape, generator=g)))
            elif name.endswith("bias"):
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
    return model.eval()


def latents(cfg: OobleckConfig, n: int, batch: int = 2, seed: int = 1) -> torch.Tensor:
    return torch.randn(batch, cfg.latent_dim, n, generator=torch.Generator().manual_seed(seed))


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


def stream(sd: StreamingDecoder, z: torch.Tensor, sizes) -> tuple[torch.Tensor, list[int], list[int]]:
    """Push z in blocks of the given sizes (cycled) and flush; return the audio, the frames of each push
    and the samples each push returned."""
    sd.reset()
    outs, frames, i = [], [], 0
    while i < z.shape[-1]:
        block = z[..., i : i + sizes[len(frames) % len(sizes)]]
        outs.append(sd.push(block))
        frames.append(block.shape[-1])
        i += block.shape[-1]
    lengths = [o.shape[-1] for o in outs]
    outs.append(sd.flush())
    return torch.cat(outs, dim=-1), frames, lengths


# ------------------------------------------------------------------------------------------ config, shapes


def test_config_hop_presets_and_validation():
    saos = OobleckConfig.saos()
    assert saos.hop == 2048 and saos.encoder_latent_dim == 128 and saos.in_channels == saos.out_channels == 2
    assert OobleckConfig.small().hop == 1024
    assert OobleckConfig.from_dict(saos.to_dict()) == saos
    sao_json = {
        "encoder": {
            "config": {
                "in_channels": 2,
                "channels": 128,
                "c_mults": [1, 2, 4, 8, 16],
                "strides": [2, 4, 4, 8, 8],
                "latent_dim": 128,
                "use_snake": True,
            }
        },
        "decoder": {
            "config": {
                "out_channels": 2,
                "channels": 128,
                "c_mults": [1, 2, 4, 8, 16],
                "strides": [2, 4, 4, 8, 8],
                "latent_dim": 64,
                "use_snake": True,
                "final_tanh": False,
            }
        },
    }
    assert OobleckConfig.from_sao_pretransform(sao_json) == saos
    sao_json["encoder"]["config"]["latent_dim"] = 64
    with pytest.raises(ValueError):
        OobleckConfig.from_sao_pretransform(sao_json)
    with pytest.raises(ValueError):
        OobleckConfig(strides=(2, 3), c_mults=(1, 2))  # odd stride breaks the symmetric transposed conv
    assert OobleckConfig(strides=(2, 3), c_mults=(1, 2), causal=True).hop == 6


def test_saos_state_dict_matches_checkpoint_shapes():
    ref = {
        k[len("pretransform.model.") :]: v
        for k, v in json.loads(SHAPES.read_text()).items()
        if k.startswith("pretransform.model.")
    }
    with torch.device("meta"):
        vae = OobleckVAE(OobleckConfig.saos())
    ours = {k: list(v.shape) for k, v in vae.state_dict().items()}
    assert set(ours) == set(ref)
    assert ours == ref


@pytest.mark.parametrize("causal", [False, True])
def test_encoder_decoder_shapes_and_hop(causal):
    cfg = tiny(causal)
    vae = randomize(OobleckVAE(cfg))
    n = 5
    audio = torch.randn(2, cfg.in_channels, n * cfg.hop)
    with torch.no_grad():
        h = vae.encoder(audio)
        z = vae.encode(audio)
        y = vae.decode(z)
    assert cfg.hop == 32
    assert h.shape == (2, 2 * cfg.latent_dim, n)
    assert z.shape == (2, cfg.latent_dim, n)
    assert y.shape == (2, cfg.out_channels, n * cfg.hop)


def test_vae_sampling_vs_mean():
    cfg = tiny(False)
    vae = randomize(OobleckVAE(cfg))
    audio = torch.randn(3, cfg.in_channels, 40 * cfg.hop)
    with torch.no_grad():
        mean, scale = vae.encoder(audio).chunk(2, dim=1)
        std = torch.nn.functional.softplus(scale) + 1e-4
        z_mean = vae.encode(audio, sample=False)
        z1 = vae.encode(audio, sample=True, generator=torch.Generator().manual_seed(7))
        z2 = vae.encode(audio, sample=True, generator=torch.Generator().manual_seed(7))
        z3 = vae.encode(audio, sample=True, generator=torch.Generator().manual_seed(8))
        again = vae.encode(audio, sample=False)
    torch.testing.assert_close(z_mean, mean)
    assert torch.equal(again, z_mean)  # deterministic
    assert torch.equal(z1, z2) and not torch.allclose(z1, z3)
    eps = (z1 - mean) / std  # the sampling noise, recovered: standard normal
    assert abs(eps.mean().item()) < 0.05 and abs(eps.std().item() - 1) < 0.05
    kl = vae.bottleneck.kl(mean, std)
    assert kl.ndim == 0 and kl.item() > 0


def test_snake_inference_path_equals_autograd_path():
    snake = randomize(SnakeBeta(6))
    x = torch.randn(2, 6, 50)
    with torch.no_grad():
        fast = snake(x)
        ref = x + torch.sin(snake.alpha.exp()[:, None] * x) ** 2 / (snake.beta.exp()[:, None] + 1e-9)
    slow = snake(x.clone().requires_grad_())
    slow.sum().backward()
    assert snake.alpha.grad is not None and snake.alpha.grad.abs().sum() > 0
    torch.testing.assert_close(fast, ref)
    assert torch.equal(slow.detach(), fast)
    assert not torch.allclose(fast, x)


# --------------------------------------------------------------------------------------------- weight norm


def test_weight_norm_matches_torch_and_loads_both_namings():
    torch.manual_seed(0)
    for make_ours, theirs in [
        (lambda: WNConv1d(5, 7, 3, dilation=2, padding=(2, 2)), nn.Conv1d(5, 7, 3, dilation=2, padding=2)),
        (lambda: WNConvTranspose1d(6, 4, 8, 4, crop=(2, 2)), nn.ConvTranspose1d(6, 4, 8, 4, padding=2)),
    ]:
        x = torch.randn(2, theirs.in_channels, 11)
        ours = make_ours()
        new = nn.utils.parametrizations.weight_norm(theirs)
        g = new.parametrizations.weight.original0
        with torch.no_grad():
            g.mul_(torch.rand_like(g) + 0.5)  # gains that differ from the direction's norm
        sd_new = new.state_dict()
        assert {"parametrizations.weight.original0", "parametrizations.weight.original1"} <= set(sd_new)
        load_oobleck_state_dict(ours, sd_new)
        torch.testing.assert_close(ours(x), new(x))

        old = nn.utils.parametrize.remove_parametrizations(new, "weight")
        with pytest.warns(FutureWarning):
            old = nn.utils.weight_norm(old)
        assert {"weight_g", "weight_v"} <= set(old.state_dict())
        fresh = make_ours()
        load_oobleck_state_dict(fresh, old.state_dict())
        torch.testing.assert_close(fresh(x), old(x))
        assert fresh.weight_g.shape == old.weight_g.shape


def test_state_dict_round_trip_g_v_and_parametrization_names():
    cfg = tiny(False)
    a, b = randomize(OobleckVAE(cfg), seed=1), randomize(OobleckVAE(cfg), seed=2)
    z = latents(cfg, 6)
    with torch.no_grad():
        ya, yb = a.decode(z), b.decode(z)
    assert rel_err(yb, ya) > 0.1
    sd = a.state_dict()
    assert any(k.endswith("weight_g") for k in sd) and any(k.endswith("weight_v") for k in sd)

    load_oobleck_state_dict(b, sd)
    with torch.no_grad():
        assert torch.equal(b.decode(z), ya)

    renamed = {
        k.replace("weight_g", "parametrizations.weight.original0").replace(
            "weight_v", "parametrizations.weight.original1"
        ): v
        for k, v in sd.items()
    }
    c = randomize(OobleckVAE(cfg), seed=3)
    load_oobleck_state_dict(
        c, {"pretransform.model." + k: v for k, v in renamed.items()}, prefix="pretransform.model."
    )
    with torch.no_grad():
        assert torch.equal(c.decode(z), ya)

    missing = dict(sd)
    missing.pop("decoder.layers.0.weight_g")
    with pytest.raises(RuntimeError):
        load_oobleck_state_dict(c, missing)
    assert "decoder.layers.0.weight_g" in load_oobleck_state_dict(c, missing, strict=False).missing_keys


def test_fold_weight_norm_gives_identical_outputs_and_loads():
    cfg = tiny(False)
    vae = randomize(OobleckVAE(cfg))
    folded = fold_weight_norm(vae)
    assert any(k.endswith("weight_g") for k in vae.state_dict())  # original untouched
    assert not any(k.endswith(("weight_g", "weight_v")) for k in folded.state_dict())
    z = latents(cfg, 8)
    audio = torch.randn(2, cfg.in_channels, 8 * cfg.hop)
    with torch.no_grad():
        torch.testing.assert_close(folded.decode(z), vae.decode(z), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(folded.encode(audio), vae.encode(audio), rtol=1e-5, atol=1e-6)

    # g/v checkpoints load into a folded model, folded (plain) weights load into an unfolded one
    other = fold_weight_norm(randomize(OobleckVAE(cfg), seed=5))
    load_oobleck_state_dict(other, vae.state_dict())
    back = randomize(OobleckVAE(cfg), seed=6)
    load_oobleck_state_dict(back, folded.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(other.decode(z), vae.decode(z), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(back.decode(z), vae.decode(z), rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------------------------------------ streaming


@pytest.mark.parametrize(
    "causal,audio_channels,use_snake", [(True, 2, True), (False, 2, True), (True, 1, True), (False, 1, False)]
)
def test_streaming_equals_full_decode(causal, audio_channels, use_snake):
    cfg = tiny(causal, audio_channels, use_snake)
    dec = randomize(OobleckDecoder(cfg))
    z = latents(cfg, 96)
    with torch.no_grad():
        full = dec(z)
    assert full.abs().max() > 1e-2 and torch.isfinite(full).all()
    sd = StreamingDecoder(dec)
    assert sd.latency_samples == cfg.decoder_latency_samples
    assert (sd.latency_samples == 0) == causal
    for sizes in ([1], [3], [10], [48], [5, 1, 17, 2, 40]):
        y, frames, lengths = stream(sd, z, sizes)
        assert y.shape == full.shape
        assert rel_err(y, full) < 1e-4, sizes
        if causal:  # zero lookahead: every push returns all of its audio at once
            assert lengths == [f * cfg.hop for f in frames]
        else:  # the output trails the input by exactly latency_samples
            assert sum(lengths) == full.shape[-1] - sd.latency_samples


def test_streaming_delay_equals_receptive_field():
    """Perturbing latent frame j changes the full decode from sample j·hop - latency on, and not before:
    so the streamer's latency is the true right receptive field, and 0 for the causal model."""
    for causal in (False, True):
        cfg = tiny(causal)
        dec = randomize(OobleckDecoder(cfg)).double()
        sd = StreamingDecoder(dec)
        z = latents(cfg, 64, batch=1).double()
        j = 40
        z2 = z.clone()
        z2[..., j] += 1.0
        with torch.no_grad():
            diff = (dec(z2) - dec(z)).abs().amax(dim=1)[0]
        first = int(torch.nonzero(diff > 1e-13)[0])
        assert first == j * cfg.hop - sd.latency_samples
        assert sd.lookahead_frames == -(-sd.latency_samples // cfg.hop)


def test_saos_latency_and_lookahead():
    cfg = OobleckConfig.saos()
    with torch.device("meta"):
        sd = StreamingDecoder(OobleckDecoder(cfg))
    assert sd.latency_samples == cfg.decoder_latency_samples == 18981
    assert sd.lookahead_frames == cfg.lookahead_frames == 10


def test_causal_decoder_is_causal():
    cfg = tiny(True)
    dec = randomize(OobleckDecoder(cfg))
    z = latents(cfg, 30)
    with torch.no_grad():
        full, prefix = dec(z), dec(z[..., :12])
    torch.testing.assert_close(prefix, full[..., : 12 * cfg.hop], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("causal", [True, False])
def test_no_clicks_at_block_seams(causal):
    cfg = tiny(causal)
    dec = randomize(OobleckDecoder(cfg))
    z = latents(cfg, 90)
    with torch.no_grad():
        full = dec(z)
    sd = StreamingDecoder(dec)
    y, _, lengths = stream(sd, z, [3])
    seams = torch.tensor(lengths).cumsum(0)
    seams = seams[(seams > 0) & (seams < y.shape[-1])]
    jump = (y[..., 1:] - y[..., :-1]).abs().amax(dim=(0, 1))  # jump[t]: between samples t and t+1
    at_seams = jump[seams - 1]
    mask = torch.ones_like(jump, dtype=torch.bool)
    mask[seams - 1] = False
    assert at_seams.max() <= 1.1 * jump[mask].max()
    full_jump = (full[..., 1:] - full[..., :-1]).abs().amax(dim=(0, 1))
    torch.testing.assert_close(at_seams, full_jump[seams - 1], rtol=1e-3, atol=1e-5)

    # the check has teeth: decoding blocks independently (no carried state) breaks the seams
    with torch.no_grad():
        naive = torch.cat([dec(z[..., i : i + 3]) for i in range(0, 90, 3)], dim=-1)
    seam_idx = torch.arange(3, 90, 3) * cfg.hop
    naive_err = (naive - full)[..., seam_idx].abs().max()
    ours_err = (y - full)[..., seam_idx].abs().max()
    assert naive_err > 100 * ours_err


def test_state_is_preallocated_and_bounded():
    cfg = tiny(False)
    dec = randomize(OobleckDecoder(cfg))
    sd = StreamingDecoder(dec)
    st = sd.reset(batch_size=2)
    ids, size = [id(b) for b in st.buffers], st.numel()
    assert size > 0
    for k in range(200):
        sd.push(latents(cfg, 1 + k % 4, seed=k))
    assert sd.state is st and [id(b) for b in st.buffers] == ids and st.numel() == size
    assert st.frames_in == sum(1 + k % 4 for k in range(200))
    assert st.samples_out == st.frames_in * cfg.hop - sd.latency_samples
    with pytest.raises(ValueError):
        sd.push(latents(cfg, 1, batch=3))


def test_reset_and_weight_changes_between_streams():
    cfg = tiny(True)
    dec = randomize(OobleckDecoder(cfg), seed=1)
    sd = StreamingDecoder(dec)
    z = latents(cfg, 20)
    sd.push(latents(cfg, 7, seed=9))  # an abandoned stream
    load_oobleck_state_dict(dec, randomize(OobleckDecoder(cfg), seed=2).state_dict())  # in-place update
    with torch.no_grad():
        full = dec(z)
    y, _, _ = stream(sd, z, [4])  # stream() resets first
    assert rel_err(y, full) < 1e-4
    snap = sd.reset(batch_size=2)
    sd.push(z[..., :5])
    saved = snap.clone()
    first = sd.push(z[..., 5:9])
    sd.state = saved  # a cloned state resumes the stream exactly
    torch.testing.assert_close(sd.push(z[..., 5:9]), first, rtol=0, atol=0)
