"""OSC control surface: `/lmdm/...` messages from SuperCollider, Tidal, TouchOSC or a script play the
Instrument, on the same asyncio loop as the REPL.

Why not python-osc's server: its dispatcher sleeps until each bundle's timetag, which stalls the loop (and
the REPL) for every timestamped bundle Tidal or SuperCollider sends ahead of time, and its parser pads an
argument that is cut short with zeros. Here a plain `asyncio.DatagramProtocol` decodes each packet whole,
checking every length against the bytes that are there, keeps every bundle's timetag and hands it to the
Instrument as an absolute `at=` (a `time.monotonic()` instant), so the engine applies the change at the
block heard at that time; nothing ever waits.

Every message has an effect or gets exactly one `/lmdm/error s:address s:reason` reply, and changes
nothing then. A packet is decoded whole before anything in it is applied; one that cannot be decoded gets
one error with address "?". OSC only sets values: it never evaluates code.
"""

from __future__ import annotations

import asyncio
import inspect
import ipaddress
import logging
import os
import socket
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..live.files import Refused, create_new
from ..live.mappings import check_aliases
from ..live.params import PARAM_DOMAINS
from .osc_routes import (
    ALIAS_ROUTE,
    ROUTES,
    Bad,
    Call,
    check_integer,
    check_number,
    check_text,
    cps_to_bpm,
    is_quantiser,
    lambda_arg,
    param_arg,
    plain,
    sampler_arg,
    set_param,
    source_arg,
    status_pairs,
    type_name,
)
from .osc_wire import Incoming, Undecodable, clip, decode, encode, suggest

if TYPE_CHECKING:
    from ..live.instrument import Instrument

log = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 57140
DEFAULT_RECORD_DIR = Path("recordings")
MAX_AHEAD_S = 60.0  # a timetag further ahead than this is a clock mix-up, not a plan
RECV_BUFFER = 1 << 20  # bytes: rides out a burst while the loop is busy elsewhere
QUANTISERS = {"@now": "now", "@block": "block", "@beat": "beat", "@bar": "bar"}
PLAY_KEYS = ("prompt", "cfg", "cfg_pp", "steps", "gain", "seed", "sampler")  # applied in this order


# --- the server ---------------------------------------------------------------------------------------------


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, control: OSCControl) -> None:
        self.control = control

    def datagram_received(self, data: bytes, addr: tuple) -> None:
        self.control._packet(data, addr)

    def error_received(self, exc: Exception) -> None:  # e.g. a reply to a client that has gone
        self.control.last_error = f"socket: {exc}"


class OSCControl:
    """Listens for `/lmdm/...` on UDP and plays `inst` (see docs/osc.md for the address space).

    `host`: the address to listen on; the default is loopback only, anything else must be asked for.
    `allow`: client IPs or networks ("192.168.1.20", "10.0.0.0/24") that may play; others get an error.
    `patch_loader(name_or_path)`: loads a patch for /lmdm/patch (if it returns something with an
    `osc_aliases` mapping, those aliases replace the current ones).
    `aliases`: extra addresses whose first number sets a patch-mapping parameter, e.g. {"/knob/1": "cfg"}.
    `record_dir`: the one directory /lmdm/record writes under (created if missing, its parent must exist);
    `patch_dirs`: where /lmdm/patch finds a patch by name (default: ./patches, then the shipped ones).
    Counters: `received` messages (and undecodable packets), `applied`, `errors`; `last_error`.
    """

    def __init__(
        self,
        inst: Instrument,
        host: str = DEFAULT_HOST,
        port: int = DEFAULT_PORT,
        allow: list[str] | None = None,
        patch_loader: Callable[[str], Any] | None = None,
        aliases: dict[str, str] | None = None,
        record_dir: str | Path = DEFAULT_RECORD_DIR,
        patch_dirs: list[str | Path] | None = None,
    ) -> None:
        if not isinstance(host, str) or not host:
            raise ValueError(f"host must be an address like 127.0.0.1, got {host!r}")
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
            raise ValueError(f"port must be an integer in 0..65535 (0: any free port), got {port!r}")
        self.inst, self.host, self.port = inst, host, port
        self.allow = [self._network(a) for a in allow] if allow is not None else None
        self.patch_loader = patch_loader
        self.record_dir = Path(record_dir)
        self.patch_dirs = [Path(d) for d in patch_dirs] if patch_dirs is not None else None
        self._aliases: dict[str, str] = {}
        self.set_aliases(aliases or {})
        self.received = self.applied = self.errors = 0
        self.last_error = ""
        self._transport: asyncio.DatagramTransport | None = None
        self._cps: float | None = None
        self.clock = None  # a control.clock.Clock: when set, /lmdm/play's cps/cycle go to it
        self._tasks: set[asyncio.Task] = set()

    @staticmethod
    def _network(entry: Any) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
        try:
            return ipaddress.ip_network(str(entry), strict=False)
        except ValueError:
            raise ValueError(f"allow entries must be IP addresses or networks, got {entry!r}") from None

    # --- lifecycle ------------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Bind on the running loop. OSError with one clear line when the port is taken."""
        if self._transport is not None:
            return
        loop = asyncio.get_running_loop()
        try:
            transport, _ = await loop.create_datagram_endpoint(
                lambda: _Protocol(self), local_addr=(self.host, self.port)
            )
        except OSError as e:
            raise OSError(
                e.errno, f"cannot listen for OSC on {self.host}:{self.port}: {e.strerror or e}"
            ) from None
        self._transport = transport
        sock = transport.get_extra_info("socket")
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECV_BUFFER)
        except OSError:
            pass  # the system's default buffer still works
        bound = transport.get_extra_info("sockname")
        self.port = int(bound[1])
        if not self._loopback(bound[0]):
            who = "the allowed clients" if self.allow else "anyone who can reach this machine"
            log.warning(
                "OSC listens on %s:%d beyond loopback: %s can play the instrument", bound[0], self.port, who
            )

    @staticmethod
    def _loopback(host: str) -> bool:
        try:
            return ipaddress.ip_address(host.split("%")[0]).is_loopback
        except ValueError:
            return False

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
            self._transport = None
        for task in list(self._tasks):
            task.cancel()

    @property
    def listening(self) -> bool:
        return self._transport is not None

    @property
    def address(self) -> tuple[str, int] | None:
        """The (host, port) the server is bound to (the port the system chose for port=0), or None."""
        if self._transport is None:
            return None
        bound = self._transport.get_extra_info("sockname")
        return str(bound[0]), int(bound[1])

    def set_aliases(self, aliases: dict[str, str]) -> None:
        """Replace the extra addresses: {"/knob/1": "cfg", "/fader/2": "weight:choir"}."""
        self._aliases = check_aliases(aliases)

    @property
    def aliases(self) -> dict[str, str]:
        return dict(self._aliases)

    # --- packets --------------------------------------------------------------------------------------------

    def _allowed(self, host: str) -> bool:
        if self.allow is None:
            return True
        try:
            ip = ipaddress.ip_address(host.split("%")[0])
        except ValueError:
            return False
        if ip.version == 6 and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return any(ip in net for net in self.allow)

    def _packet(self, data: bytes, sender: tuple) -> None:
        try:
            if not self._allowed(sender[0]):
                self.received += 1
                self._fail(sender, "?", f"client {sender[0]} is not allowed to play this instrument")
                return
            try:
                messages = decode(data)
            except Undecodable as e:
                self.received += 1
                self._fail(sender, "?", f"undecodable packet of {len(data)} bytes: {e}")
                return
            offset = time.monotonic() - time.time()  # system (NTP) time -> time.monotonic()
            for m in messages:
                self.received += 1
                try:
                    self._dispatch(m, sender, offset)
                    self.applied += 1
                except ValueError as e:  # Bad, and the Instrument's own checks
                    self._fail(sender, m.address, str(e))
                except Exception as e:  # a failing handler never stops the next message
                    self._fail(sender, m.address, plain(e))
        except Exception as e:  # pragma: no cover - last line of defence for the loop
            self.last_error = f"{type(e).__name__}: {e}"

    def _dispatch(self, m: Incoming, sender: tuple, offset: float) -> None:
        if m.problem:
            raise Bad(m.problem)
        route = ROUTES.get(m.address)
        if route is None:
            if m.address not in self._aliases:
                raise Bad("unknown address" + suggest(m.address, [*ROUTES, *self._aliases]))
            route = ALIAS_ROUTE
        if route.method == "_ignore":
            return
        args, quant = m.args, None
        if (
            route.timed
            and len(args) > route.lo
            and (not route.pairs or len(args) % 2)
            and is_quantiser(args[-1])
        ):
            args, quant = args[:-1], args[-1]
        if not route.lo <= len(args) <= route.hi:
            if not route.timed and args and is_quantiser(args[-1]):
                raise Bad(f"{m.address} takes no @ quantiser: it acts on arrival")
            kinds = ", ".join(type_name(a).split()[-1] for a in args) or "none"
            raise Bad(f"expects {route.usage}, got {len(args)} arguments ({kinds})")
        at = self._when(m.timetag, quant, offset)
        getattr(self, route.method)(Call(m.address, args, at, sender))

    @staticmethod
    def _when(timetag: float, quant: str | None, offset: float) -> str | float:
        """A quantiser wins; else a future timetag becomes a time.monotonic() instant; else now."""
        if quant is not None:
            if quant not in QUANTISERS:
                raise Bad(f"unknown quantiser {clip(quant, 40)!r}; use @beat, @bar, @block or @now")
            return QUANTISERS[quant]
        if timetag:
            ahead = timetag - time.time()
            if ahead > MAX_AHEAD_S:
                raise Bad(f"bundle timetag is {ahead:.3g} s ahead (at most {MAX_AHEAD_S:g} s)")
            if ahead > 0:
                return timetag + offset
        return "now"

    # --- replies --------------------------------------------------------------------------------------------

    def _fail(self, sender: tuple, address: str, reason: str) -> None:
        self.errors += 1
        address, reason = clip(address, 200), clip(reason, 400)
        self.last_error = f"{address}: {reason}"
        self.reply(sender, "/lmdm/error", [("s", address), ("s", reason)])

    def reply(self, sender: tuple, address: str, typed: list[tuple[str, Any]]) -> None:
        """Send `address` with (type tag, value) arguments back to `sender` through the listening socket."""
        if self._transport is None or not sender[1]:
            return
        try:
            self._transport.sendto(encode(address, typed), sender)
        except Exception as e:  # a reply that cannot go out is not the next message's problem
            self.last_error = f"reply to {sender[0]}:{sender[1]}: {e}"

    # --- handlers: each checks every argument, then calls one Instrument setter ------------------------------

    def _prompt(self, c: Call) -> None:
        before = self.inst.notices
        self.inst.prompt(check_text(c.args[0], "prompt"), at=c.at)
        self._notice(c, before)

    def _notice(self, c: Call, before: int) -> None:
        """A prompt far from what the model knows plays, and its sender gets the line naming the nearest."""
        if self.inst.notices > before and self.inst.notice:
            self.reply(c.sender, "/lmdm/notice", [("s", self.inst.notice)])

    def _prompts(self, c: Call) -> None:
        if len(c.args) % 2:
            raise Bad(f"expects text/weight pairs, got {len(c.args)} arguments")
        blend: dict[str, float] = {}
        for k in range(0, len(c.args), 2):
            text = check_text(c.args[k], f"argument {k + 1} (prompt)")
            if text in blend:
                raise Bad(f"prompt {clip(text, 60)!r} appears twice")
            blend[text] = check_number(
                c.args[k + 1], f"weight of {clip(text, 60)!r}", 0.0, PARAM_DOMAINS["weight"][1]
            )
        before = self.inst.notices
        self.inst.prompts(blend, at=c.at)
        self._notice(c, before)

    def _cfg(self, c: Call) -> None:
        self.inst.cfg(param_arg(c.args[0], "cfg"), at=c.at)

    def _cfg_pp(self, c: Call) -> None:
        self.inst.cfg_pp(lambda_arg(c.args[0]), at=c.at)

    def _tempo_guidance(self, c: Call) -> None:
        self.inst.tempo_guidance(param_arg(c.args[0], "tempo_guidance"), at=c.at)

    def _sketch_guidance(self, c: Call) -> None:
        self.inst.sketch_guidance(param_arg(c.args[0], "sketch_guidance"), at=c.at)

    def _steps(self, c: Call) -> None:
        self.inst.steps(param_arg(c.args[0], "steps"), at=c.at)

    def _sampler(self, c: Call) -> None:
        self.inst.sampler(sampler_arg(c.args[0]), at=c.at)

    def _seed(self, c: Call) -> None:
        self.inst.seed(check_integer(c.args[0], "seed", 0, 2**63 - 1), at=c.at)

    def _drop(self, c: Call) -> None:
        limit = self.inst.model.lmdm.context_frames
        frames = check_integer(c.args[0], "frames", 1, limit) if c.args else None
        self.inst.drop_context(frames, at=c.at)

    def _gain(self, c: Call) -> None:
        self.inst.gain(param_arg(c.args[0], "gain"), at=c.at)

    def _mute(self, c: Call) -> None:
        self.inst.mute(at=c.at)

    def _unmute(self, c: Call) -> None:
        self.inst.unmute(at=c.at)

    def _hush(self, c: Call) -> None:
        self.inst.hush()

    def _reset(self, c: Call) -> None:
        self.inst.reset(at=c.at)

    def _bpm(self, c: Call) -> None:
        self.inst.bpm(param_arg(c.args[0], "bpm"))

    def _patch(self, c: Call) -> None:
        """A patch by name from the patch directories only (read and checked here, size first), handed to
        the loader whole: a client never names a path."""
        from ..live.patch import load_named_patch

        ref = check_text(c.args[0], "patch")
        if not ref:
            raise Bad("patch needs a name")
        if self.patch_loader is None:
            raise Bad("no patch loader")
        result = self.patch_loader(load_named_patch(ref, self.patch_dirs))
        if inspect.isawaitable(result):  # an async loader: its failure is answered when it happens
            task = asyncio.ensure_future(result)
            self._tasks.add(task)
            task.add_done_callback(lambda t: self._patch_done(t, c))
        else:
            self._install_controls(result)

    def _patch_done(self, task: asyncio.Task, c: Call) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        try:
            self._install_controls(task.result())
        except Exception as e:
            self._fail(c.sender, c.address, plain(e))

    def _install_controls(self, result: Any) -> None:
        controls = getattr(result, "controls", result)
        aliases = getattr(controls, "osc_aliases", None)
        if isinstance(aliases, Mapping):
            self.set_aliases(dict(aliases))

    def _record(self, c: Call) -> None:
        """A new .wav file under `record_dir`, created here (O_CREAT|O_EXCL|O_NOFOLLOW, one folder at a
        time), so no name can leave the directory, follow a link or replace a file."""
        ref = check_text(c.args[0], "record path")
        if not ref.lower().endswith(".wav") or ref.endswith("/"):
            raise Bad(f"record path must end in .wav, got {clip(ref, 80)!r}")
        try:
            self.record_dir.mkdir(exist_ok=True)
        except OSError as e:
            raise Bad(f"the recordings directory cannot be created ({e.strerror or e})") from None
        try:
            fd = create_new(self.record_dir, ref, "the record path")
        except Refused as e:
            raise Bad(f"{e}; recordings go under the recordings directory, never overwrite a file") from None
        try:
            self.inst.record(fd)
        except BaseException:
            os.close(fd)
            raise

    def _record_stop(self, c: Call) -> None:
        self.inst.stop_recording()

    def _status(self, c: Call) -> None:
        self.reply(c.sender, "/lmdm/status", status_pairs(self.inst))

    def _play(self, c: Call) -> None:
        """Tidal-style pairs. Unknown keys (Tidal's s, orbit, _id_...) are ignored so one pattern can drive
        SuperDirt too; the known ones are all checked before any is applied."""
        args = c.args
        if len(args) % 2:
            raise Bad(f"expects key/value pairs, got {len(args)} arguments")
        given: dict[str, Any] = {}
        for k in range(0, len(args), 2):
            if not isinstance(args[k], str):
                raise Bad(f"argument {k + 1} must be a key (a string), got {type_name(args[k])}")
            given[args[k]] = args[k + 1]
        checks = {
            "prompt": lambda v: check_text(v, "prompt"),
            "cfg": lambda v: param_arg(v, "cfg"),
            "cfg_pp": lambda_arg,
            "steps": lambda v: param_arg(v, "steps"),
            "gain": lambda v: param_arg(v, "gain"),
            "seed": lambda v: check_integer(v, "seed", 0, 2**63 - 1),
            "sampler": sampler_arg,
        }
        values = {key: checks[key](given[key]) for key in PLAY_KEYS if key in given}
        cps = check_number(given["cps"], "cps", 1e-6, 1e6) if "cps" in given else None
        if "cycle" in given:
            check_number(given["cycle"], "cycle", -1e12, 1e12)
        if "delta" in given:
            check_number(given["delta"], "delta", 0.0, 1e6)
        if not values and cps is None:
            keys = ", ".join(sorted(clip(k, 30) for k in given)) or "none"
            raise Bad(f"nothing to play: no {', '.join(PLAY_KEYS)} or cps key (keys: {keys})")
        if self.clock is not None and cps is not None:  # the clock decides whether Tidal drives the tempo
            cycle = float(given["cycle"]) if "cycle" in given else None
            self.clock.tidal(cps, cycle, c.at if isinstance(c.at, float) else None)
        elif cps is not None and cps != self._cps:
            self.inst.bpm(cps_to_bpm(cps))  # Tidal: 4 beats per cycle
            self._cps = cps
        setters = {
            "prompt": self.inst.prompt,
            "cfg": self.inst.cfg,
            "cfg_pp": self.inst.cfg_pp,
            "steps": self.inst.steps,
            "gain": self.inst.gain,
            "seed": self.inst.seed,
            "sampler": self.inst.sampler,
        }
        for key, value in values.items():
            setters[key](value, at=c.at)

    def _sketch(self, c: Call) -> None:
        a = c.args
        strength = check_number(a[1], "strength", 0.0, 2.0) if len(a) > 1 else 1.0
        median = check_integer(a[2], "filter", 1, 31) if len(a) > 2 else 5
        self.inst.sketch(source_arg(a[0]), strength=strength, filter=median)

    def _sketch_off(self, c: Call) -> None:
        self.inst.sketch_off()

    def _sketch_notes(self, c: Call) -> None:
        self.inst.sketch_notes(bool(check_integer(c.args[0], "on", 0, 1)))

    def _sketch_note(self, c: Call) -> None:
        self.inst.sketch_note(
            check_integer(c.args[0], "note", 0, 127), check_integer(c.args[1], "velocity", 0, 127)
        )

    def _jam(self, c: Call) -> None:
        a = c.args
        t_f = check_integer(a[1], "t_f", -4096, 4096) if len(a) > 1 else 0
        mix = check_number(a[2], "mix", 0.0, 1.0) if len(a) > 2 else 0.0
        self.inst.jam(source_arg(a[0]), t_f=t_f, mix=mix)

    def _jam_off(self, c: Call) -> None:
        self.inst.jam_off()

    def _delay(self, c: Call) -> None:
        blocks = check_integer(c.args[1], "blocks", 1, 64) if len(c.args) > 1 else 4
        self.inst.delay(source_arg(c.args[0]), blocks=blocks)

    def _delay_off(self, c: Call) -> None:
        self.inst.delay_off()

    def _alias(self, c: Call) -> None:
        set_param(self.inst, self._aliases[c.address], c.args[0], c.at)
