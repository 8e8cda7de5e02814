"""`lmdm-live play`: one live session. The instrument on its audio backend, the clock, the OSC server, the
MIDI port and the REPL (or a script) wired together on one asyncio loop, and taken down in order.
"""

from __future__ import annotations

import sys
from pathlib import Path

from .commands import check_out, check_seconds, model_for

DEFAULT_RECORD_DIR = Path("recordings")


def cmd_play(args) -> int:

    from ..live.instrument import Instrument
    from ..live.schedule import HEADROOM_PRESETS_MS

    check_out(args.out)
    check_seconds(args.seconds)
    headroom = args.headroom
    if headroom is not None and headroom not in HEADROOM_PRESETS_MS:
        try:
            headroom = float(headroom)
        except ValueError:
            raise SystemExit(
                f"lmdm-live: error: --headroom must be tight, normal, safe or milliseconds, got {headroom!r}"
            ) from None
    if getattr(args, "remote", None) is not None:
        inst = remote_instrument(args)
        return _play(inst, args)
    inst = Instrument(
        model_for(args),
        backend=args.backend,
        out=args.out,
        device=args.audio_device,
        headroom_ms=headroom,
        latency=args.latency,
        seed=args.seed,
        steps=args.steps,
        cfg=args.cfg,
        tempo_guidance=args.tempo_guidance,
        log=args.log,
        t5=args.t5,
        start=False,
        model_ref=args.model,
        dtype=args.dtype,
        threads=args.threads,
        limiter=args.limiter,
    )
    return _play(inst, args)


def _play(inst, args) -> int:
    import asyncio

    from ..live.schedule import underruns_from_load

    if args.prompt:
        if len(args.prompt) == 1:
            inst.prompt(args.prompt[0][0])
        else:
            inst.prompts(dict(args.prompt))
    elif getattr(args, "remote", None) is None:
        inst.prompt("")
    inst.start()
    name = getattr(inst.backend, "name", "?")
    where = f" -> {inst.backend.path}" if hasattr(inst.backend, "path") else ""
    print(
        f"lmdm-live: playing '{inst.model.name}' ({inst.dtype}) through {name}{where} at {inst.engine.out_rate} Hz; "
        f"latency {inst.latency()['total_ms']:.0f} ms worst case",
        file=sys.stderr,
    )
    try:
        asyncio.run(_session(inst, args))
    finally:
        inst.stop()
        st = inst.status()
        why = ""
        if st["underruns"] and underruns_from_load(st):
            why = (
                f" (blocks fell up to {st['behind_ms_max']:.0f} ms behind real time: the machine was too busy for "
                "these settings; try fewer --steps or a bigger --headroom)"
            )
        print(
            f"lmdm-live: stopped after {st['blocks']} blocks, {st['underruns']} underruns{why}, "
            f"{st['faults']} faults",
            file=sys.stderr,
        )
    return 0


async def _session(inst, args) -> None:
    """The control loop: OSC, MIDI and the patch watcher beside the REPL (or until a signal, headless)."""
    import asyncio
    import signal

    from .clock import Clock
    from .repl import run_repl, run_source, toolbar_text

    loop = asyncio.get_running_loop()
    clock = Clock(inst, "internal")
    ns: dict = {"inst": inst, "clock": clock}
    osc = midi = None
    try:
        if args.clock != "internal":
            clock.use(args.clock)
        if args.osc_port:
            from .osc import OSCControl

            osc = OSCControl(
                inst,
                host=args.osc_host,
                port=args.osc_port,
                allow=args.osc_allow,
                patch_loader=inst.load,
                record_dir=record_dir(args),
            )
            osc.clock = clock
            ns["osc"] = osc
        if args.midi_in is not None:
            from .midi import MidiControl

            midi = MidiControl(
                inst,
                port=args.midi_in or None,
                api=args.midi_api,
                clock=clock,
                patch_loader=inst.load,
                loop=loop,
            )
            ns["midi"] = midi
            print(f"lmdm-live: MIDI in from {midi.port}", file=sys.stderr)
        if args.patch is not None:

            def install(controls) -> None:
                if midi is not None:
                    midi.install(controls)
                if osc is not None:
                    osc.set_aliases(dict(controls.osc_aliases))

            ns["patch"] = inst.watch(args.patch, at="now", on_load=install)
        if (
            osc is not None
        ):  # listen once the patch is in: a message never lands under a patch applied after it
            await osc.start()
            print(f"lmdm-live: OSC on {args.osc_host}:{args.osc_port} (docs/osc.md)", file=sys.stderr)
        if args.headless:
            stop = asyncio.Event()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, stop.set)
            try:
                await asyncio.wait_for(stop.wait(), args.seconds)
            except TimeoutError:
                pass
        elif sys.stdin.isatty():
            await run_repl(
                ns,
                lambda: toolbar_text(inst),
                history_path=Path.home() / ".lmdm_live_history",
                banner="inst is playing. Try inst.prompt('dub techno'), inst.status(); Ctrl-D quits.",
            )
        else:  # piped input: one statement per line, no prompt
            while line := await loop.run_in_executor(None, sys.stdin.readline):
                run_source(line.rstrip("\n"), ns)
    finally:
        inst.unwatch()
        if midi is not None:
            midi.close()
        if osc is not None:
            osc.close()


def remote_instrument(args):
    """`--remote HOST`: the instrument on the host, its audio through netJACK2, optionally the laptop's own
    model beside it for when the link drops."""
    from ..audio.netjack import NetLink, load_netmanager
    from .remote import RemoteInstrument
    from .remote_wire import load_secret

    secret = load_secret(args.secret_file)
    host, port = args.remote
    if load_netmanager(None, args.net_listen, args.net_port):
        print(f"lmdm-live: netJACK2's netmanager waits for the host on UDP {args.net_port}", file=sys.stderr)
    fallback = None
    if args.fallback == "local":
        from ..live.instrument import Instrument

        fallback = Instrument(
            args.model, backend=_unconnected_jack("lmdm-fallback"), seed=args.seed, start=False,
            dtype=args.dtype, threads=args.threads,
        )  # fmt: skip
    inst = RemoteInstrument(host, port, secret=secret, fallback=fallback)
    ports = [f"{fallback.backend.client_name}:out_{i + 1}" for i in range(2)] if fallback else []
    inst.net = inst.engine.net = NetLink(
        inst.info.get("net_name"),
        targets=args.remote_out or True,
        fallback=ports,
        on_change=lambda up: print(
            f"lmdm-live: the host's audio {'arrives' if up else 'is gone: ' + ('the local model plays' if ports else 'silence')}",
            file=sys.stderr,
        ),
    ).start()
    return inst


def _unconnected_jack(name: str):
    from ..audio import JackBackend

    return JackBackend(client_name=name, channels=2, connect=False)


def record_dir(args) -> Path:
    """Where OSC recordings go: --record-dir, else beside --out, else recordings/."""
    if args.record_dir is not None:
        return args.record_dir
    return args.out.parent if args.out is not None else DEFAULT_RECORD_DIR
