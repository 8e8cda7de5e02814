"""Data-parallel training: two CPU processes joined by gloo follow the single-process trajectory of the same
global batch (stage 1, ARC-Forcing, the autoencoder), checkpoints resume on another number of processes,
and a batch that does not split is refused in one line."""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from safetensors.torch import load_file, save_file
from test_train_autoencoder import tones
from test_train_stage1 import IO, patterned_set, small_model

from lmdm_live.model.bundle import LMDMModel
from lmdm_live.model.dit import DiTConfig
from lmdm_live.model.extras import ExtrasLayout
from lmdm_live.model.oobleck import OobleckConfig, OobleckVAE
from lmdm_live.model.sao import SAODiT
from lmdm_live.train.arc import ARCConfig, ARCTrainer, Discriminator
from lmdm_live.train.autoencoder import AEConfig, AETrainer
from lmdm_live.train.distributed import Rows, World, process_group
from lmdm_live.train.stage1 import LatentSet, Stage1Config, Stage1Trainer

WORLD = 2
# The weights are compared twice. Under SGD the two runs must agree to float rounding (STRICT): the
# processes sum the batch in another order, nothing else differs. Under the trainers' own Adam(W), which
# moves each weight by about lr * sign(gradient) in its first steps, a gradient that is zero in exact
# arithmetic or at the rounding level (the cross-attention key norms' biases, which shift every key alike:
# ~1e-10) has its step decided by that order: at lr 1e-3 stage 1 stays within ADAMW, under a third of one
# step, while one wrong row or draw moves most weights by a whole step. The losses, the whole batch's on
# every process, agree to 1e-5 either way: the sharp check of a trajectory under Adam.
STRICT = 1e-5
ADAMW = 3e-4


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank(rank: int, port: int, job, args) -> None:
    os.environ.update(
        RANK=str(rank),
        WORLD_SIZE=str(WORLD),
        LOCAL_RANK=str(rank),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    torch.set_num_threads(1)
    job(*args)


@pytest.fixture(autouse=True)
def one_thread():
    """The single-process reference on one thread, as each rank runs: sums split over another number of
    threads round differently, whatever earlier tests left torch's thread count at."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def on_ranks(job, *args) -> float:
    """job(*args) in WORLD real processes with torchrun's environment on 127.0.0.1; the seconds it took.

    Spawned, not forked: after other tests have run torch on several threads, a forked child can hang in
    the OpenMP pool it inherits (libgomp is not fork-safe)."""
    t0 = time.perf_counter()
    torch.multiprocessing.start_processes(
        _rank, args=(_free_port(), job, args), nprocs=WORLD, start_method="spawn"
    )
    return time.perf_counter() - t0


def max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in a)


def jam_model() -> LMDMModel:
    """The small test model with tempo, sketch and accompaniment channels (window_batch's every branch)."""
    model = small_model("causal")
    layout = ExtrasLayout(True, True, True, IO)
    torch.manual_seed(1)
    cfg = DiTConfig(
        io_channels=IO,
        embed_dim=64,
        depth=2,
        num_heads=2,
        cond_token_dim=16,
        global_cond_dim=16,
        ff_mult=2,
        input_add_dim=1 + IO + layout.channels,
    )
    model.net = SAODiT(cfg, seconds_dim=16, seconds_max=256.0).eval()
    with torch.no_grad():
        model.net.dit.to_input_add_embed.weight.normal_(0, 0.1)
    model.extras = layout.to_dict()
    return model


def jam_set(n: int = 8, frames: int = 64) -> LatentSet:
    """patterned_set's music with frame controls and drum/rest pairs (half the clips have them)."""
    base = patterned_set(n, frames)
    g = torch.Generator().manual_seed(3)
    beat = (torch.arange(frames) * 0.1) % 1.0
    controls = [
        torch.stack([torch.full((frames,), 120.0), beat, beat / 4, *torch.rand(4, frames, generator=g)])
        for _ in range(n)
    ]
    drums = [torch.randn(IO, frames, generator=g) if i % 2 else None for i in range(n)]
    rest = [0.5 * x if i % 2 else None for i, x in enumerate(base.latents)]
    return LatentSet(base.latents, base.tokens, controls, drums, rest)


# --- stage 1 ---------------------------------------------------------------------------------------------


def sgd(trainer) -> None:
    """Swap a trainer's optimizer(s) for plain SGD, whose steps are linear in the gradients."""
    for name in ("opt", "opt_g", "opt_d"):
        if hasattr(trainer, name):
            params = [p for group in getattr(trainer, name).param_groups for p in group["params"]]
            setattr(trainer, name, torch.optim.SGD(params, lr=0.05))


def _stage1_job(model_path: Path, data_path: Path, cfg: Stage1Config, steps: int, out: Path) -> None:
    with process_group("cpu", cfg.batch) as world:
        data = LatentSet.load(data_path, mmap=True)  # what each rank of `train stage1` reads
        for opt in ("adamw", "sgd"):
            trainer = Stage1Trainer(LMDMModel.load(model_path), cfg, world=world)
            if opt == "sgd":
                sgd(trainer)
            for _ in range(steps):
                trainer.train_step(data)
            if world.main:
                trainer.save(out / opt)


@pytest.mark.parametrize("kind", ["encdec", "jam"])
def test_stage1_on_two_processes_is_the_single_process_run(tmp_path, kind):
    """encdec: plain crops, one target. jam: extras, accompaniment pairs and three targets per window,
    whose weighted mean is over the whole batch (a sum across the processes)."""
    model, data = (small_model("encdec"), patterned_set()) if kind == "encdec" else (jam_model(), jam_set())
    cfg = Stage1Config(batch=4, lr=1e-3, seed=3, targets=1 if kind == "encdec" else 3)
    model.save(tmp_path / "start.safetensors")
    data.save(tmp_path / "data.safetensors")
    start = model.net.sao_state_dict()
    seconds = on_ranks(
        _stage1_job, tmp_path / "start.safetensors", tmp_path / "data.safetensors", cfg, 3, tmp_path
    )
    for opt, tol in (("adamw", ADAMW), ("sgd", STRICT)):
        single = Stage1Trainer(LMDMModel.load(tmp_path / "start.safetensors"), cfg)
        if opt == "sgd":
            sgd(single)
        for _ in range(3):
            single.train_step(data)
        shared = LMDMModel.load(tmp_path / opt / "model.safetensors").net.sao_state_dict()
        diff = max_diff(shared, single.model.net.sao_state_dict())
        print(f"stage1 {kind} {opt}: max |w_2proc - w_1proc| = {diff:.2e} ({seconds:.1f} s, 2 processes)")
        assert diff < tol
        assert max_diff(shared, start) > 1e-3  # they trained
        history = json.loads((tmp_path / opt / "progress.json").read_text())["history"]
        assert history == pytest.approx(single.history, rel=1e-5)


# --- ARC-Forcing ------------------------------------------------------------------------------------------------


def _arc_run(trainer: ARCTrainer, data: LatentSet, rounds: int, use_sgd: bool) -> list[dict]:
    if use_sgd:
        sgd(trainer)
    return [{**trainer.d_step(data), **trainer.g_step(data)} for _ in range(rounds)]


def _arc_job(model_path: Path, data_path: Path, cfg: ARCConfig, rounds: int, out: Path) -> None:
    with process_group("cpu", cfg.batch) as world:
        data = LatentSet.load(data_path, mmap=True)
        for sgd in (False, True):
            model = LMDMModel.load(model_path)
            disc = Discriminator.from_model(model)
            disc.load_state_dict(load_file(str(out / "start_d.safetensors")))  # the head starts at random
            trainer = ARCTrainer(model, disc, cfg, world)
            history = _arc_run(trainer, data, rounds, sgd)
            if world.main:
                name = "sgd" if sgd else "adamw"
                save_file(model.net.sao_state_dict(), str(out / f"g_{name}.safetensors"))
                save_file(
                    {k: v.contiguous() for k, v in disc.state_dict().items()},
                    str(out / f"d_{name}.safetensors"),
                )
                (out / f"{name}.json").write_text(json.dumps(history))


def test_arc_on_two_processes_is_the_single_process_run(tmp_path):
    """Both players, the rollouts' re-noising (drawn for the whole batch inside the sampler), and the
    contrastive roll across the processes' rows (prompt and accompaniment of the row before).

    The weights are compared under SGD only. Under AdamW (see ADAMW) the relativistic losses leave several
    discriminator gradients zero in exact arithmetic (the head's output bias and its last block's pw2 bias
    shift real and fake scores alike, and cancel) and others at the rounding level at the start, so those
    weights take steps of about lr either way and the generator's next step inherits them: max differences
    of ~2e-3 (D) and ~1e-4 (G) at lr 1e-3. The losses still agree."""
    model, data = jam_model(), jam_set()
    cfg = ARCConfig(rounds=2, steps=3, batch=4, lr_g=1e-3, lr_d=1e-3, seed=5)
    model.save(tmp_path / "start.safetensors")
    data.save(tmp_path / "data.safetensors")
    disc = Discriminator.from_model(model)
    save_file({k: v.clone() for k, v in disc.state_dict().items()}, str(tmp_path / "start_d.safetensors"))
    seconds = on_ranks(
        _arc_job, tmp_path / "start.safetensors", tmp_path / "data.safetensors", cfg, 2, tmp_path
    )
    for sgd in (False, True):
        model = LMDMModel.load(tmp_path / "start.safetensors")
        disc = Discriminator.from_model(model)
        disc.load_state_dict(load_file(str(tmp_path / "start_d.safetensors")))
        single = ARCTrainer(model, disc, cfg)
        history = _arc_run(single, data, 2, sgd)
        name = "sgd" if sgd else "adamw"
        shared = json.loads((tmp_path / f"{name}.json").read_text())
        for a, b in zip(shared, history, strict=True):
            assert a == pytest.approx(b, rel=1e-4)
        g = load_file(str(tmp_path / f"g_{name}.safetensors"))
        d = load_file(str(tmp_path / f"d_{name}.safetensors"))
        diff_g, diff_d = max_diff(g, model.net.sao_state_dict()), max_diff(d, disc.state_dict())
        print(
            f"ARC {name}: max |w_2proc - w_1proc| G {diff_g:.2e}, D {diff_d:.2e} ({seconds:.1f} s, both runs)"
        )
        if sgd:
            assert diff_g < STRICT and diff_d < STRICT
            start = LMDMModel.load(tmp_path / "start.safetensors").net.sao_state_dict()
            assert max_diff(g, start) > 1e-4
            assert max_diff(d, load_file(str(tmp_path / "start_d.safetensors"))) > 1e-4


# --- the autoencoder, through `lmdm-live train ae` ----------------------------------------------------------


def tone_dataset(root: Path, n: int = 6, seconds: float = 1.0, sr: int = 8000) -> Path:
    """A minimal dataset folder (index + mixes) of decaying tones, hop 4."""
    (root / "audio").mkdir(parents=True)
    t = np.arange(int(seconds * sr)) / sr
    examples = []
    for i in range(n):
        x = 0.3 * np.sin(2 * np.pi * 110 * 2 ** (i / 5) * t) * np.exp(-3 * t)
        sf.write(root / "audio" / f"{i:06d}.wav", x.astype(np.float32), sr)
        examples.append({"id": f"{i:06d}", "split": "test" if i == n - 1 else "train"})
    index = {"format": "lmdm-dataset", "sample_rate": sr, "hop": 4, "examples": examples}
    (root / "index.json").write_text(json.dumps(index))
    return root


def _ae_argv(data: Path, out: Path, steps: int) -> list[str]:
    return [
        "train", "ae", "--data", str(data), "--out", str(out), "--steps", str(steps), "--batch", "4",
        "--crop", "2048", "--channels", "4", "--latent-dim", "4", "--strides", "2,2", "--save-every", "100",
        "--lr", "2e-3",
    ]  # fmt: skip


def _cli_job(argv: list[str]) -> None:
    from lmdm_live.cli import main

    assert main(argv) == 0


def _ae_job(start: dict, cfg: AEConfig, steps: int, out: Path) -> None:
    with process_group("cpu", cfg.batch) as world:
        trainer = AETrainer(tiny_vae(start), cfg, world)
        sgd(trainer)
        for step in range(steps):
            trainer.train_step(trainer.rows.take(tones(cfg.batch, 2048, step)), trainer.rows)
        if world.main:
            save_file(trainer.vae.state_dict(), str(out / "sgd.safetensors"))


def tiny_vae(state: dict | None = None) -> OobleckVAE:
    torch.manual_seed(0)
    cfg = OobleckConfig(
        in_channels=1, out_channels=1, channels=4, c_mults=(1, 2), strides=(2, 2), latent_dim=4
    )
    vae = OobleckVAE(cfg)
    if state is not None:
        vae.load_state_dict(state)
    return vae


def test_autoencoder_on_two_processes_is_the_single_process_run(tmp_path, capsys):
    """`train ae` under two ranks: each reads its crops from the files, the spectral convergence's sums of
    squares run over both processes' rows, and rank 0 alone evaluates and writes. The losses and held-out
    evaluations are the single process's; the weights are compared strictly under SGD."""
    from lmdm_live.cli import main

    data = tone_dataset(tmp_path / "data")
    assert main(_ae_argv(data, tmp_path / "one", 3)) == 0
    seconds = on_ranks(_cli_job, _ae_argv(data, tmp_path / "two", 3))
    h1, h2 = (json.loads((tmp_path / d / "progress.json").read_text()) for d in ("one", "two"))
    assert [h["loss"] for h in h2["history"]] == pytest.approx([h["loss"] for h in h1["history"]], rel=1e-5)
    # rank 0's held-out evaluations: the same before training, and close after Adam's steps (see ADAMW)
    (a0, a3), (b0, b3) = h2["evals"], h1["evals"]
    assert a0["stft_distance"] == pytest.approx(b0["stft_distance"], rel=1e-6)
    assert a3["step"] == b3["step"] == 3 and a3["stft_distance"] == pytest.approx(
        b3["stft_distance"], rel=1e-2
    )
    one, two = (load_file(str(tmp_path / d / "vae.safetensors")) for d in ("one", "two"))
    print(
        f"autoencoder adam: max |w_2proc - w_1proc| = {max_diff(one, two):.2e} ({seconds:.1f} s, 2 processes)"
    )

    cfg = AEConfig(lr=2e-3, ffts=(256, 64), batch=4)
    start = tiny_vae().state_dict()
    on_ranks(_ae_job, start, cfg, 3, tmp_path)
    single = AETrainer(tiny_vae(start), cfg)
    sgd(single)
    for step in range(3):
        single.train_step(tones(4, 2048, step))
    shared = load_file(str(tmp_path / "sgd.safetensors"))
    diff = max_diff(shared, single.vae.state_dict())
    print(f"autoencoder sgd: max |w_2proc - w_1proc| = {diff:.2e}")
    assert diff < STRICT
    assert max_diff(shared, start) > 1e-3


# --- resume on another world size, through torchrun -------------------------------------------------------


def _stage1_argv(tmp_path: Path, out: Path, steps: int) -> list[str]:
    return [
        "train", "stage1", "--data", str(tmp_path / "data.safetensors"), "--model",
        str(tmp_path / "start.safetensors"), "--mode", "causal", "--context", "16", "--block", "8",
        "--out", str(out), "--batch", "4", "--lr", "1e-3", "--save-every", "3", "--steps", str(steps),
        "--warmup", "0",  # whole steps from the first: a wrong row or draw then moves weights by one
    ]  # fmt: skip


def test_a_run_of_two_processes_resumes_on_one(tmp_path, capsys):
    """`torchrun --nproc_per_node 2 -m lmdm_live.cli train stage1` for 3 steps (rank 0 writes the
    checkpoint and alone prints), then the same command on one process to step 5: the weights of an
    uninterrupted single-process run of 5 steps."""
    from lmdm_live.cli import main

    patterned_set().save(tmp_path / "data.safetensors")
    small_model("causal").save(tmp_path / "start.safetensors")
    torchrun = Path(sys.executable).with_name("torchrun")
    cmd = [str(torchrun), "--standalone", f"--nproc_per_node={WORLD}", "-m", "lmdm_live.cli"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[2]), *sys.path])}
    t0 = time.perf_counter()
    run = subprocess.run(
        [*cmd, *_stage1_argv(tmp_path, tmp_path / "cut", 3)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    seconds = time.perf_counter() - t0
    assert run.returncode == 0, run.stderr[-3000:]
    printed = [json.loads(line) for line in run.stdout.splitlines() if line.startswith("{")]
    assert [p["step"] for p in printed] == [3]  # rank 0 alone reports
    assert main(_stage1_argv(tmp_path, tmp_path / "cut", 5)) == 0
    assert "resuming" in capsys.readouterr().err
    assert main(_stage1_argv(tmp_path, tmp_path / "whole", 5)) == 0
    cut = load_file(str(tmp_path / "cut" / "model.safetensors"))
    whole = load_file(str(tmp_path / "whole" / "model.safetensors"))
    diff = max_diff(cut, whole)
    print(f"resume 2 -> 1 processes: max |w - w_uninterrupted| = {diff:.2e} (torchrun part {seconds:.1f} s)")
    assert diff < ADAMW
    assert max_diff(cut, load_file(str(tmp_path / "start.safetensors"))) > 1e-3
    hist = [json.loads((tmp_path / d / "progress.json").read_text())["history"] for d in ("cut", "whole")]
    assert hist[0] == pytest.approx(hist[1], rel=1e-5) and len(hist[0]) == 5


def test_arc_runs_on_two_processes_and_resumes_on_one(tmp_path, capsys):
    """`train arc` under two ranks: each builds its discriminator head at random and DDP starts them all
    from rank 0's; rank 0 alone writes; the run then resumes on one process (its step counter and per-step
    RNG do not depend on the world size; the optimizer moments restart, as on any ARC resume)."""
    from lmdm_live.cli import main

    patterned_set().save(tmp_path / "data.safetensors")
    small_model("causal").save(tmp_path / "start.safetensors")
    argv = [
        "train", "arc", "--data", str(tmp_path / "data.safetensors"), "--model", str(tmp_path / "start.safetensors"),
        "--out", str(tmp_path / "arc"), "--batch", "4", "--rollout", "2", "--sampler-steps", "3",
        "--save-every", "1", "--lr", "1e-3",
    ]  # fmt: skip
    on_ranks(_cli_job, [*argv, "--steps", "1"])
    progress = json.loads((tmp_path / "arc" / "progress.json").read_text())
    assert progress["step"] == 1 and len(progress["history"]) == 1
    assert main([*argv, "--steps", "2"]) == 0
    assert "resuming" in capsys.readouterr().err
    progress = json.loads((tmp_path / "arc" / "progress.json").read_text())
    assert progress["step"] == 2 and len(progress["history"]) == 2
    moved = load_file(str(tmp_path / "arc" / "model.safetensors"))
    assert max_diff(moved, load_file(str(tmp_path / "start.safetensors"))) > 1e-4


# --- the pieces --------------------------------------------------------------------------------------------------


def test_a_batch_that_does_not_split_is_refused_in_one_line(tmp_path, capsys, monkeypatch):
    from lmdm_live.cli import main

    patterned_set().save(tmp_path / "data.safetensors")
    small_model("causal").save(tmp_path / "start.safetensors")
    monkeypatch.setenv("WORLD_SIZE", "3")
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("LOCAL_RANK", "0")
    assert main(_stage1_argv(tmp_path, tmp_path / "run", 2)) == 2  # fails before any rendezvous
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["lmdm-live: error: --batch 4 does not split over 3 processes: the batch is the global one, "
                   "give a multiple of 3"]  # fmt: skip
    assert not (tmp_path / "run").exists()
    monkeypatch.setenv("RANK", "1")  # the other ranks leave without a word
    with pytest.raises(SystemExit):
        main(_stage1_argv(tmp_path, tmp_path / "run", 2))
    assert capsys.readouterr().err == ""


def _disagree_job() -> None:
    with process_group("cpu", 4) as world:
        if world.main:  # rank 0 says why, the others leave quietly
            with pytest.raises(ValueError, match=r"start at steps \[0, 7\]: every host needs the same --out"):
                world.same_step(7 * world.rank)
        else:
            with pytest.raises(SystemExit):
                world.same_step(7 * world.rank)  # rank 1 resumed a checkpoint rank 0 does not see


def test_ranks_that_start_at_different_steps_all_stop():
    on_ranks(_disagree_job)


def test_rows_and_mapped_latent_sets(tmp_path):
    assert World(rank=1, size=4).rows(8) == Rows(2, 4, 8)
    x = torch.arange(8.0)[:, None]
    rows = Rows(2, 4, 8)
    assert torch.equal(rows.widen(rows.take(x)).flatten(), torch.tensor([0, 0, 2, 3, 0, 0, 0, 0.0]))
    data = jam_set()
    data.styles = ["a"] * 8
    data.save(tmp_path / "d.safetensors")
    mapped, loaded = (
        LatentSet.load(tmp_path / "d.safetensors", mmap=True),
        LatentSet.load(tmp_path / "d.safetensors"),
    )
    assert mapped.styles == loaded.styles
    for name in ("latents", "controls", "drums", "rest"):
        for a, b in zip(getattr(mapped, name), getattr(loaded, name), strict=True):
            assert (a is None and b is None) or torch.equal(a, b)
    # a process's rows of a batch are those rows of the whole batch, whichever rows it reads
    from lmdm_live.train.windows import ExtrasConfig, window_batch

    layout = ExtrasLayout(True, True, True, IO)
    whole = window_batch(
        loaded, layout, ExtrasConfig(p_accomp=0.5), 6, 16, 16, torch.Generator().manual_seed(0), 8
    )
    part = window_batch(
        mapped,
        layout,
        ExtrasConfig(p_accomp=0.5),
        6,
        16,
        16,
        torch.Generator().manual_seed(0),
        8,
        rows=[5, 2],
    )
    for w, p in zip(whole, part, strict=True):
        assert torch.equal(w[[5, 2]], p)
    assert math.isfinite(float(part[0].sum()))
