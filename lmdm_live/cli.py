"""`lmdm-live`: the command line. Parsing only: each subcommand hands its arguments to control/ (or to train/
and eval/ for theirs); errors are one line."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .control.commands import cmd_bench, cmd_convert, cmd_render, cmd_replay, cmd_styles, prompt_arg
from .control.serve import cmd_serve
from .control.session import cmd_play
from .eval import cli as eval_cli
from .model.precision import DTYPES
from .train import cli as train_cli


def _change_arg(text: str) -> tuple[int, str]:
    block, sep, prompt = text.partition("=")
    if not sep or not block.strip().isdigit():
        raise argparse.ArgumentTypeError(f"expected BLOCK=PROMPT (e.g. 8=ambient pads), got {text!r}")
    return int(block), prompt


def _ceiling_arg(text: str) -> float | None:
    """--limiter: a linear peak ceiling in (0, 1], or off."""
    if text.strip().lower() == "off":
        return None
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0.0 < value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a peak ceiling in (0, 1] or 'off', got {text!r}")
    return value


def _add_limiter_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--limiter",
        type=_ceiling_arg,
        default=0.98,
        metavar="CEILING|off",
        help="the output's lookahead peak limiter: the linear ceiling no sample passes (default 0.98), or off",
    )


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model",
        default=None,
        help="PATH to an LMDM .safetensors (default: the shipped model), or a random preset on purpose: "
        "tiny | small | tiny-mel | saos-random",
    )
    p.add_argument("--mode", choices=("encdec", "causal", "bidirectional"), help="override the model's mode")
    p.add_argument("--context", type=int, help="context frames C (override)")
    p.add_argument("--block", type=int, help="block frames T (override)")
    p.add_argument("--t5", help="local t5-base directory, for models conditioned on T5")
    p.add_argument("--device", default="cpu")
    p.add_argument(
        "--dtype",
        choices=DTYPES,
        default="auto",
        help="the DiT's (auto: bfloat16 where the CPU multiplies it natively, else int8 on a CPU, float32 on a GPU)",
    )


def _add_sampler_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--steps", type=int, default=None, help="denoising steps (default: the model's, else 8)")
    p.add_argument("--sampler", choices=("pingpong", "euler"), default=None, help="default: the model's")
    p.add_argument("--cfg", type=float, default=None, help="classifier-free guidance scale (1 = off)")
    p.add_argument("--cfg-pp", type=float, default=None, help="CFG++ lambda (replaces --cfg)")
    p.add_argument(
        "--tempo-guidance",
        type=float,
        default=None,
        help="guidance on the tempo channels (0 = off); default: the model's",
    )


def _host_port(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep:
        return text, 57150
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"expected HOST or HOST:PORT, got {text!r}")
    return host.strip("[]"), int(port)


def _add_remote_args(play: argparse.ArgumentParser) -> None:
    r = play.add_argument_group("remote generation (the model on another machine; docs/scale.md)")
    r.add_argument(
        "--remote", type=_host_port, default=None, metavar="HOST[:PORT]", help="play `lmdm-live serve` there"
    )
    r.add_argument(
        "--secret-file", type=Path, default=None, help="the shared secret (else $LMDM_REMOTE_SECRET)"
    )
    r.add_argument(
        "--fallback",
        choices=("none", "local"),
        default="none",
        help="local: this machine's model plays while the link is down",
    )
    r.add_argument(
        "--net-listen",
        default=None,
        help="where netJACK2's netmanager waits for the host (an IP of this machine)",
    )
    r.add_argument("--net-port", type=int, default=19000, help="netJACK2's UDP port")
    r.add_argument(
        "--remote-out",
        default=None,
        help="JACK input ports the host's audio goes to (a name prefix; default: the speakers)",
    )


def _add_serve_parser(sub) -> None:
    sv = sub.add_parser(
        "serve", help="generate here for a performer's laptop (`lmdm-live --remote HOST` there)"
    )
    _add_model_args(sv)
    sv.add_argument(
        "--listen", default="127.0.0.1", help="control address (loopback by default: tunnel it with ssh)"
    )
    sv.add_argument("--port", type=int, default=57150, help="control TCP port")
    sv.add_argument("--allow", action="append", default=None, help="laptop IP or network allowed, repeatable")
    sv.add_argument(
        "--secret-file", type=Path, default=None, help="the shared secret (else $LMDM_REMOTE_SECRET)"
    )
    sv.add_argument("--jack-server", default=None, help="the JACK server to play into (a netJACK2 slave)")
    sv.add_argument(
        "--net-master",
        default=None,
        help="start that server as `jackd -d net`, a slave of the laptop at this IP",
    )
    sv.add_argument("--net-port", type=int, default=19000, help="netJACK2's UDP port")
    sv.add_argument(
        "--net-name", default="lmdm-host", help="this host's client name on the laptop's JACK server"
    )
    sv.add_argument("--net-latency", type=int, default=2, help="netJACK2's latency in periods (its -l)")
    sv.add_argument("--latency", choices=("normal", "low"), default="normal")
    sv.add_argument("--seed", type=int, default=0)
    sv.add_argument("--threads", type=int, default=None, help="torch threads for the model")
    sv.add_argument("--log", type=Path, default=None, help="write the event log here (for `replay`)")
    sv.add_argument("--record", type=Path, default=None, help="record what the host plays to this WAV")
    sv.add_argument(
        "--record-dir", type=Path, default=Path("recordings"), help="where OSC /lmdm/record writes"
    )
    sv.add_argument("--seconds", type=float, default=None, help="stop after this many seconds")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="lmdm-live", description="A live music diffusion model you can play.")
    sub = ap.add_subparsers(dest="command")

    play = sub.add_parser("play", help="start the instrument (default): REPL, or --headless")
    _add_model_args(play)
    play.add_argument("--prompt", action="append", type=prompt_arg, help="TEXT[:WEIGHT], repeatable")
    play.add_argument(
        "--backend",
        choices=("jack", "sounddevice", "file"),
        default=None,
        help="audio out (default: JACK if a server runs, else a sound card, else a WAV file)",
    )
    play.add_argument(
        "--out", type=Path, default=None, help="WAV file for the file backend (in a folder that exists)"
    )
    play.add_argument(
        "--record-dir",
        type=Path,
        default=None,
        help="where OSC /lmdm/record writes (default: the --out folder, else recordings/)",
    )
    play.add_argument(
        "--audio-device", dest="audio_device", default=None, help="sounddevice output NAME|INDEX"
    )
    play.add_argument(
        "--headroom",
        default=None,
        help="ring headroom: tight|normal|safe or milliseconds (default: the --latency's)",
    )
    play.add_argument(
        "--latency",
        choices=("normal", "low"),
        default="normal",
        help="low: less audio queued and half the model's steps, at least 2 (both cut a change into the "
        "block playing)",
    )
    play.add_argument("--seed", type=int, default=0)
    play.add_argument(
        "--threads", type=int, default=None, help="torch threads for the model (default: all cores but one)"
    )
    play.add_argument("--steps", type=int, default=None, help="default: the model's own (else 8)")
    play.add_argument("--cfg", type=float, default=None, help="default: the model's own (else 1)")
    play.add_argument(
        "--tempo-guidance",
        type=float,
        default=None,
        help="guidance on the tempo channels; default: the model's own",
    )
    _add_limiter_arg(play)
    play.add_argument("--log", type=Path, default=None, help="write the event log here (for `replay`)")
    play.add_argument("--headless", action="store_true", help="no REPL: run until SIGINT/SIGTERM")
    play.add_argument("--seconds", type=float, default=None, help="headless: stop after this many seconds")
    play.add_argument(
        "--osc-host", default="127.0.0.1", help="OSC address to listen on (loopback by default)"
    )
    play.add_argument("--osc-port", type=int, default=57140, help="OSC port (0 = no OSC)")
    play.add_argument(
        "--osc-allow", action="append", default=None, help="client IP allowed to control, repeatable"
    )
    play.add_argument(
        "--midi-in",
        nargs="?",
        const="",
        default=None,
        help="MIDI input NAME (no name: a virtual input to connect to)",
    )
    play.add_argument("--patch", type=Path, default=None, help="play a patch file and reload it on save")
    play.add_argument(
        "--clock",
        choices=("internal", "midi", "tidal", "link"),
        default="internal",
        help="tempo source for at='beat'/'bar': inst.bpm, MIDI clock, Tidal's cps, or Ableton Link",
    )
    play.add_argument("--midi-api", choices=("alsa", "jack"), default=None, help="force a MIDI system")
    _add_remote_args(play)
    _add_serve_parser(sub)

    render = sub.add_parser("render", help="render a stream offline to a WAV file (same LMDMStream as live)")
    _add_model_args(render)
    _add_sampler_args(render)
    render.add_argument("--bpm", type=float, default=120.0, help="tempo for models with tempo channels")
    render.add_argument("--prompt", action="append", type=prompt_arg, help="TEXT[:WEIGHT], repeatable")
    render.add_argument(
        "--change",
        action="append",
        type=_change_arg,
        default=[],
        help="BLOCK=PROMPT: switch prompt at that block index, repeatable",
    )
    render.add_argument(
        "--script", type=Path, help="a Python file of at(block|'Ns', prompt=..., cfg=...) changes"
    )
    render.add_argument("--log", type=Path, help="render a logged live performance instead (same as replay)")
    render.add_argument("--seconds", type=float, default=10.0)
    render.add_argument("--seed", type=int, default=0)
    _add_limiter_arg(render)
    render.add_argument("--out", type=Path, required=True)

    st = sub.add_parser("styles", help="list the styles the model was trained on")
    st.add_argument("--model", default=None, help="PATH to an LMDM .safetensors (default: the shipped model)")
    st.add_argument("--near", metavar="PROMPT", help="also rank the styles by how near they are to PROMPT")
    st.add_argument("--json", action="store_true", help="print one JSON object")

    rp = sub.add_parser("replay", help="rebuild a live performance from its event log, sample for sample")
    rp.add_argument("log", type=Path)
    rp.add_argument("out", type=Path)
    rp.add_argument("--t5", help="local t5-base directory, for models conditioned on T5")

    bench = sub.add_parser("bench", help="measure the cost of a block in each mode")
    bench.add_argument("--json", action="store_true", help="print one JSON object")
    bench.add_argument(
        "--model",
        help="PATH, or a random preset: tiny | small | tiny-mel | saos-random (default: the shipped model)",
    )
    bench.add_argument("--device", default="cpu")
    bench.add_argument(
        "--dtype",
        choices=(*DTYPES, "float16"),
        default="auto",
        help="auto: what the instrument picks here (bfloat16 where the CPU multiplies it natively, else int8)",
    )
    own = " (default: the model's own; a preset: %s)"
    bench.add_argument("--context", type=int, help="context frames" + own % 192)
    bench.add_argument("--block", type=int, help="block frames" + own % 48)
    bench.add_argument("--steps", type=int, help="sampler steps" + own % 8)
    bench.add_argument("--cfg", type=float, help="guidance scale" + own % 1)
    bench.add_argument("--sampler", help="sampler name" + own % "pingpong")
    bench.add_argument(
        "--tempo-guidance", type=float, help="guidance on the tempo channels (a third row)" + own % 0
    )
    bench.add_argument("--blocks", type=int, default=10, help="timed blocks per mode (median reported)")
    bench.add_argument("--warmup", type=int, default=2)
    bench.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    bench.add_argument("--no-decode", action="store_true", help="skip timing the streaming decoder")
    bench.add_argument("--out", type=Path, help="also write the JSON here")
    bench.add_argument(
        "--engine",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="also play SECONDS through the real-time engine (JACK if running, else a paced file)",
    )
    bench.add_argument("--engine-only", action="store_true", help="skip the per-mode cache figures")
    bench.add_argument("--latency", choices=("normal", "low"), default="normal", help="the engine's preset")
    bench.add_argument(
        "--change-every",
        type=float,
        default=2.0,
        help="seconds between the engine's prompt changes (0: none)",
    )

    train_cli.add_parser(sub)
    eval_cli.add_parser(sub)

    convert = sub.add_parser("convert", help="convert checkpoints into the lmdm_live format")
    csub = convert.add_subparsers(dest="source", required=True)
    sao = csub.add_parser("sao", help="Stable Audio Open Small -> LMDM checkpoint")
    sao.add_argument("--ckpt", "--checkpoint", dest="ckpt", required=True, help=".safetensors or .ckpt")
    sao.add_argument("--config", required=True, help="model_config.json")
    sao.add_argument("--out", required=True, help="output .safetensors")
    sao.add_argument("--input-add-dim", type=int, default=None, help="default 1 + io_channels (65)")
    sao.add_argument("--no-vae", action="store_true", help="leave the autoencoder out")
    return ap


def cmd_train(args) -> int:
    return train_cli.run(args)


COMMANDS = {
    "styles": cmd_styles,
    "play": cmd_play,
    "serve": cmd_serve,
    "render": cmd_render,
    "replay": cmd_replay,
    "bench": cmd_bench,
    "convert": cmd_convert,
    "train": cmd_train,
    "eval": eval_cli.run,
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    if not argv or argv[0].startswith("-") and argv[0] not in ("-h", "--help"):
        argv = ["play", *argv]
    args = parser.parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except (ValueError, FileNotFoundError, OSError, KeyError, RuntimeError) as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        print(f"lmdm-live: error: {msg}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
