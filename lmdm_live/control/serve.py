"""`lmdm-live serve`: the instrument on a GPU host, played from a performer's laptop.

Audio leaves through the host's JACK server, a netJACK2 slave of the laptop's JACK server (`jackd -d net`;
the laptop loads JACK's `netmanager`), so the laptop's sound card clocks both and the samples arrive as
they were made. Control arrives on one TCP connection from the laptop (`remote_wire.py`): the laptop's
`RemoteInstrument` sends every change with its `at=` or timetag, and asks for status and the far-prompt
notices. Only a peer that answers the shared-secret challenge (and is on the allow-list, when there is one)
plays; a newer authenticated connection replaces the older one, as a laptop that reconnects does.

When the link drops, the master stops clocking this server: no process cycles come, the engine's ring
stays full, and the instrument keeps its whole state until the laptop is back.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from .osc import OSCControl
from .osc_routes import plain
from .osc_wire import Incoming, Undecodable, decode, encode
from .remote_wire import (
    DEFAULT_CONTROL_PORT,
    SECRET_ENV,
    VERSION,
    Deframer,
    ProtocolError,
    apply_change,
    check_answer,
    frame,
    load_secret,
    message,
    new_nonce,
    new_secret,
    to_json,
)

AUTH_TIMEOUT_S = 5.0  # to answer the challenge
IDLE_TIMEOUT_S = 5.0  # the laptop pings twice a second: this long without a packet is a dead link


class StreamOSC(OSCControl):
    """The documented address space, answered on the TCP connection it came in on."""

    def __init__(self, inst: Any, net_name: str | None = None, **kw: Any) -> None:
        super().__init__(inst, **kw)
        self.net_name = net_name
        self.streams: dict[tuple, Any] = {}  # sender -> asyncio.StreamWriter

    def reply(self, sender: tuple, address: str, typed: list[tuple[str, Any]]) -> None:
        writer = self.streams.get(sender)
        if writer is None or writer.is_closing():
            return
        try:
            writer.write(frame(encode(address, typed)))
        except Exception as e:  # a reply that cannot go out is not the next message's problem
            self.last_error = f"reply to {sender[0]}:{sender[1]}: {e}"

    def allowed(self, host: str) -> bool:
        return self._allowed(host)

    def packet(self, packet: bytes, sender: tuple) -> None:
        """One packet from the authenticated laptop: the `/lmdm/remote/...` addresses here, the rest as OSC."""
        try:
            messages = decode(packet)
        except Undecodable as e:
            self._fail(sender, "?", f"undecodable packet of {len(packet)} bytes: {e}")
            return
        offset = time.monotonic() - time.time()
        for m in messages:
            self.received += 1
            try:
                if m.address.startswith("/lmdm/remote/"):
                    self._remote(m, sender, offset)
                else:
                    self._dispatch(m, sender, offset)
                self.applied += 1
            except ValueError as e:
                self._fail(sender, m.address, str(e))
            except Exception as e:  # a failing change never stops the next one
                self._fail(sender, m.address, plain(e))

    def _send(self, sender: tuple, address: str, *args: Any) -> None:
        writer = self.streams.get(sender)
        if writer is not None and not writer.is_closing():
            writer.write(frame(message(address, *args)))

    def _remote(self, m: Incoming, sender: tuple, offset: float) -> None:
        a = m.args
        if m.address == "/lmdm/remote/ping" and len(a) == 2:
            self._send(sender, "/lmdm/remote/pong", a[0], float(a[1]), time.time())
        elif m.address == "/lmdm/remote/info":
            self._send(sender, "/lmdm/remote/info", to_json(describe(self.inst, self.net_name)))
        elif m.address == "/lmdm/remote/status" and len(a) == 1:
            figures = {**self.inst.status(), "latency": dict(self.inst.latency())}
            figures["state"] = instrument_state(self.inst)
            self._send(sender, "/lmdm/remote/status", a[0], to_json(figures))
        elif m.address == "/lmdm/remote/submit" and len(a) in (2, 3):
            kind, value = str(a[0]), json.loads(str(a[1]))
            quant = a[2] if len(a) == 3 else None
            at = self._when(m.timetag, quant, offset)
            before = self.inst.notices
            apply_change(self.inst, kind, value, at)
            if self.inst.notices > before and self.inst.notice:
                self._send(sender, "/lmdm/notice", self.inst.notice)
        elif m.address == "/lmdm/remote/hush":
            self.inst.hush()
            self._send(sender, "/lmdm/remote/state", to_json(instrument_state(self.inst)))
        elif m.address != "/lmdm/remote/auth":  # a repeated answer is harmless
            raise ValueError(f"unknown remote address or arguments ({len(a)})")


def instrument_state(inst: Any) -> dict:
    """What the laptop mirrors: the snapshot playing next, gain, seed, tempo."""
    return {
        "params": inst.params.to_dict(),
        "gain": inst.gain(),
        "unmuted_gain": inst.unmuted_gain,
        "seed": inst.seed(),
        "bpm": inst.bpm(),
    }


def describe(inst: Any, net_name: str | None) -> dict:
    """The host's model and instrument, for the laptop's `RemoteInstrument`."""
    m = inst.model
    return {
        "version": VERSION,
        "name": m.name,
        "model_ref": str(getattr(inst.engine, "model_ref", "") or ""),
        "sample_rate": m.sample_rate,
        "hop": m.hop,
        "block_seconds": m.block_seconds,
        "mode": m.lmdm.mode,
        "context_frames": m.lmdm.context_frames,
        "block_frames": m.lmdm.block_frames,
        "styles": dict(m.styles),
        "layout": m.layout.to_dict(),
        "dtype": inst.dtype,
        "latency_preset": inst.latency_preset,
        "out_rate": inst.engine.out_rate,
        "net_name": net_name,
        "state": instrument_state(inst),
    }


class ControlServer:
    """The laptop's control connection to `inst` (see the module docstring)."""

    def __init__(
        self,
        inst: Any,
        secret: bytes,
        host: str = "127.0.0.1",
        port: int = DEFAULT_CONTROL_PORT,
        allow: list[str] | None = None,
        record_dir: str | Path = "recordings",
        net_name: str | None = None,
        say: Any = None,
    ) -> None:
        self.inst, self.secret, self.host, self.port = inst, secret, host, port
        self.osc = StreamOSC(inst, net_name, host=host, port=0, allow=allow, record_dir=record_dir)
        self.say = say or (lambda msg: print(f"lmdm-live: {msg}", file=sys.stderr))
        self.sessions = 0  # authenticated connections so far
        self.refused = 0  # connections turned away (allow-list, wrong secret, broken handshake)
        self._server: asyncio.AbstractServer | None = None
        self._active: asyncio.StreamWriter | None = None

    async def start(self) -> None:
        try:
            self._server = await asyncio.start_server(self._client, self.host, self.port)
        except OSError as e:
            raise OSError(e.errno, f"cannot listen on {self.host}:{self.port}: {e.strerror or e}") from None
        self.port = int(self._server.sockets[0].getsockname()[1])

    def close(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        if self._active is not None:
            self._active.close()
        self.osc.close()

    @property
    def connected(self) -> bool:
        return self._active is not None and not self._active.is_closing()

    # --- one connection -----------------------------------------------------------------------------------

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername") or ("?", 0)
        sender = (str(peer[0]), int(peer[1]))
        try:
            if not self.osc.allowed(sender[0]):
                self._refuse(writer, f"{sender[0]} is not allowed to play this instrument")
                return
            nonce = new_nonce()
            writer.write(frame(message("/lmdm/remote/hello", nonce, VERSION)))
            deframer = Deframer()
            authed = False
            while True:
                data = await asyncio.wait_for(
                    reader.read(1 << 16), IDLE_TIMEOUT_S if authed else AUTH_TIMEOUT_S
                )
                if not data:
                    break
                for packet in deframer.feed(data):
                    if authed:
                        self.osc.packet(packet, sender)
                    elif self._authenticates(packet, nonce):
                        authed = True
                        self._take_over(writer, sender)
                    else:
                        self._refuse(writer, "wrong secret: only the performer's machine plays this host")
                        return
        except (TimeoutError, ProtocolError, ConnectionError, OSError) as e:
            if self._active is writer:
                self.say(f"the laptop's link dropped ({plain(e) or type(e).__name__}); playing on")
        finally:
            self.osc.streams.pop(sender, None)
            if self._active is writer:
                self._active = None
                self.say("the laptop is gone; the instrument keeps its state until it is back")
            writer.close()

    def _authenticates(self, packet: bytes, nonce: str) -> bool:
        try:
            messages = decode(packet)
        except Undecodable:
            return False
        m = messages[0] if len(messages) == 1 else None
        return (
            m is not None
            and m.address == "/lmdm/remote/auth"
            and len(m.args) == 1
            and check_answer(self.secret, nonce, m.args[0])
        )

    def _refuse(self, writer: asyncio.StreamWriter, reason: str) -> None:
        self.refused += 1
        self.say(f"refused a control connection: {reason}")
        writer.write(frame(message("/lmdm/error", "/lmdm/remote/auth", reason)))
        writer.close()

    def _take_over(self, writer: asyncio.StreamWriter, sender: tuple) -> None:
        old = self._active
        self._active = writer
        self.osc.streams[sender] = writer
        self.sessions += 1
        if old is not None and old is not writer:
            old.close()  # a laptop that reconnects leaves its half-open connection behind
        self.say(f"the laptop at {sender[0]} plays (connection {self.sessions})")


# --- the command --------------------------------------------------------------------------------------------


def net_jackd(
    server: str, master: str, port: int, name: str, latency: int, channels: int
) -> subprocess.Popen:
    """Start this host's JACK server as a netJACK2 slave of the laptop's (`jackd -d net`), and wait for it."""
    jackd = shutil.which("jackd")
    if jackd is None:
        raise RuntimeError("jackd is not installed (the jackd2 package): it carries the audio to the laptop")
    cmd = [jackd, "-n", server, "-d", "net", "-a", master, "-p", str(port), "-n", name]
    cmd += ["-C", str(channels), "-P", str(channels), "-l", str(latency)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    from ..audio import jack_server_running

    end = time.monotonic() + 10
    while time.monotonic() < end:
        if proc.poll() is not None:
            why = (proc.stderr.read() if proc.stderr else "").strip().splitlines()
            raise RuntimeError(f"jackd -d net exited: {why[-1] if why else proc.returncode}")
        if jack_server_running(server):
            return proc
        time.sleep(0.1)
    proc.terminate()
    raise RuntimeError(f"jackd -d net (server {server!r}) did not come up within 10 s")


def secret_for(args) -> bytes:
    if args.secret_file is not None or os.environ.get(SECRET_ENV):
        return load_secret(args.secret_file)
    text = new_secret()
    print(
        f"lmdm-live: no --secret-file or ${SECRET_ENV}: this session's secret is {text} "
        f"(give it to the laptop as ${SECRET_ENV})",
        file=sys.stderr,
    )
    return text.encode()


def cmd_serve(args) -> int:
    from ..live.instrument import Instrument
    from .commands import model_for

    if args.device != "cpu":
        raise ValueError(
            f"serve plays the model on the CPU for now (--device {args.device} is not supported yet)"
        )
    secret = secret_for(args)
    jackd = None
    if args.net_master:
        args.jack_server = args.jack_server or "lmdm-net"
        jackd = net_jackd(
            args.jack_server, args.net_master, args.net_port, args.net_name, args.net_latency, 2
        )
        print(
            f"lmdm-live: JACK server {args.jack_server!r} is a netJACK2 slave of {args.net_master} "
            f"(UDP {args.net_port}); the laptop sees it as {args.net_name!r}",
            file=sys.stderr,
        )
    if args.jack_server:
        os.environ["JACK_DEFAULT_SERVER"] = args.jack_server
    try:
        inst = Instrument(
            model_for(args),
            backend="jack",
            latency=args.latency,
            seed=args.seed,
            log=args.log,
            t5=args.t5,
            start=False,
            model_ref=args.model,
            dtype=args.dtype,
            threads=args.threads,
        )
        if args.record is not None:
            inst.record(args.record)
        inst.start()
        try:
            asyncio.run(_serve(inst, args, secret))
        finally:
            inst.stop()
            st = inst.status()
            print(
                f"lmdm-live: served {st['blocks']} blocks, {st['underruns']} underruns, {st['faults']} faults",
                file=sys.stderr,
            )
    finally:
        if jackd is not None:
            jackd.terminate()
            jackd.wait(10)
    return 0


async def _serve(inst: Any, args, secret: bytes) -> None:
    loop = asyncio.get_running_loop()
    server = ControlServer(
        inst,
        secret,
        host=args.listen,
        port=args.port,
        allow=args.allow,
        record_dir=args.record_dir,
        net_name=args.net_name,
    )
    await server.start()
    print(
        f"lmdm-live: serving '{inst.model.name}' on {args.listen}:{server.port}", file=sys.stderr, flush=True
    )
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    end = None if args.seconds is None else loop.time() + args.seconds
    try:
        while not stop.is_set() and (end is None or loop.time() < end):
            inst.backend.reconnect()  # the slave's system ports come back with the laptop
            try:
                await asyncio.wait_for(stop.wait(), 0.25)
            except TimeoutError:
                pass
    finally:
        server.close()
