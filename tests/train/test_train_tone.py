"""Stage 1 with tone channels: a model handed its sketch as tokens learns a melody the plain sketch could not
teach it in the same steps."""

from __future__ import annotations

import torch

from lmdm_live.eval.sketch_use import SketchUseConfig, sketch_use
from lmdm_live.model.bundle import LMDMModel
from lmdm_live.model.codec import MelCodec, MelCodecConfig
from lmdm_live.model.dit import DiTConfig
from lmdm_live.model.extras import ExtrasLayout, sketch_channels
from lmdm_live.model.lmdm import LMDMConfig
from lmdm_live.model.sao import SAODiT
from lmdm_live.model.tone import tone_map
from lmdm_live.train.latent_set import LatentSet
from lmdm_live.train.stage1 import Stage1Config, Stage1Trainer
from lmdm_live.train.tone import add_tone
from lmdm_live.train.windows import ExtrasConfig

DIM = 16
WINDOW = LMDMConfig(mode="causal", context_frames=8, block_frames=4)


def codec() -> MelCodec:
    plain = MelCodec(MelCodecConfig()).eval()
    q, _ = torch.linalg.qr(torch.randn(plain.dim, DIM, generator=torch.Generator().manual_seed(0)))
    return plain.projected(q, torch.zeros(plain.dim))


def small_model(tone: bool) -> LMDMModel:
    torch.manual_seed(0)
    extras = {"tempo": True, "sketch": True}
    cfg = DiTConfig(
        io_channels=DIM,
        embed_dim=64,
        depth=2,
        num_heads=2,
        cond_token_dim=16,
        global_cond_dim=16,
        ff_mult=2,
        input_add_dim=1 + DIM + ExtrasLayout.from_config(extras, DIM).channels,
    )
    net = SAODiT(cfg, seconds_dim=16, seconds_max=256.0)
    with torch.no_grad():
        net.dit.to_input_add_embed.weight.normal_(0, 0.1)
    m = LMDMModel(
        net.eval(), WINDOW, None, 44100, {"type": "minilm"}, 1.5, "tone-test", extras, mel_codec=codec()
    )
    return add_tone(m) if tone else m


def melodies(model: LMDMModel, n: int = 24, frames: int = 48) -> LatentSet:
    """Lead stems that are their melody's tone tokens (a wandering pitch, rests), so the sketch tells all."""
    g = torch.Generator().manual_seed(3)
    tm = tone_map(model.mel_codec)
    controls, leads = [], []
    for _ in range(n):
        steps = torch.randint(-3, 4, (frames,), generator=g).float()
        pitch = (55.0 + torch.randint(0, 12, (1,), generator=g) + steps.cumsum(0)).clamp(40, 84)
        voiced = (torch.rand(frames, generator=g) > 0.2).float()
        loud = torch.full((frames,), -20.0)
        rows = [torch.full((frames,), 100.0), torch.zeros(frames), torch.zeros(frames), pitch, voiced]
        rows += [loud, torch.full((frames,), 1500.0)] * 2
        controls.append(torch.stack(rows))
        tone = tm.tokens(sketch_channels(pitch, voiced, loud, torch.full((frames,), 1500.0)))
        leads.append(tone * 0.4)  # a tenth of the tone's own tokens (they come in at a quarter)
    lat = [torch.randn(DIM, frames, generator=g) for _ in range(n)]
    tok = torch.zeros(n, 5, 16)
    return LatentSet(lat, tok, controls, lead=leads, solo_tokens=tok.clone())


def test_tone_channels_teach_a_melody_the_sketch_alone_does_not():
    solo = ExtrasConfig(p_tempo_off=0.0, p_sketch=1.0, p_accomp=0.0, p_solo=1.0, p_sketch_solo=1.0)
    losses = {}
    for tone in (False, True):
        model = small_model(tone)
        data = melodies(model)
        trainer = Stage1Trainer(model, Stage1Config(batch=8, lr=2e-3, seed=1, targets=2), extras=solo)
        for _ in range(120):
            trainer.train_step(data)
        if tone:  # the tone's input weights, zero at the start, were trained
            first = 1 + DIM + model.layout.offsets()["tone"].start
            assert model.dit.to_input_add_embed.weight[:, first:].abs().max() > 1e-2
        model.net.eval()
        report = sketch_use(model, data, SketchUseConfig(windows=8, seeds=2, targets=2))
        losses[tone] = report["no context"]
    # without its context, all a model has is the sketch: with the tone it plays the melody closer, and a
    # melody moved a fifth costs it over twice as much (120 steps: 30 % against 13 %)
    assert losses[True]["true"] < 0.95 * losses[False]["true"], losses
    fifth = {k: v["a fifth up"] / v["true"] - 1 for k, v in losses.items()}
    assert fifth[True] > 2 * max(fifth[False], 0.01), fifth
