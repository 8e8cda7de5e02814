"""`RemoteInstrument`: the Instrument a performer's laptop plays when the model runs on another machine
(`lmdm-live --remote HOST`, `lmdm-live serve` there).

It is an `Instrument` whose engine is the control link: every setter checks its value and builds its
snapshot exactly as on a local instrument, and the snapshot goes to the host with its `at=` (a quantiser,
or an instant turned into the host's clock). So the REPL's `inst`, OSC from SuperCollider or Tidal, MIDI
mappings and patches all play it unchanged. The audio comes back through netJACK2 (`audio/netjack.py`).

When the link drops, changes are held (the last of each kind) and sent when it is back, so nothing played
in the meantime is lost; with a fallback, the laptop's own model plays them at once.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

from ..live.instrument import Instrument
from ..live.schedule import StatusReport
from ..live.stream import StreamParams
from .osc_wire import Incoming
from .remote_link import Link
from .remote_wire import (
    DEFAULT_CONTROL_PORT,
    apply_change,
    bundle,
    change_value,
    host_timetag,
    message,
    to_json,
)

# what `Instrument.status` reports from the laptop's own mirror, and what the host's status adds on top
MIRRORED = {
    "latency",
    "state",
    "prompt",
    "prompts",
    "cfg",
    "cfg_pp",
    "tempo_guidance",
    "sketch_guidance",
    "steps",
    "sampler",
    "seed",
    "gain",
    "bpm",
}
MIRRORED |= {"backend"}
STATUS_REUSE_S = 0.2  # the REPL's toolbar asks 4 times a second: one round trip serves a few asks


@dataclass(frozen=True)
class RemoteModel:
    """What the laptop knows of the host's model: enough for the setters' checks, patches and status."""

    name: str
    sample_rate: int
    hop: int
    block_seconds: float
    lmdm: Any
    styles: dict = field(default_factory=dict)
    layout: Any = None

    @classmethod
    def of(cls, info: dict) -> RemoteModel:
        window = SimpleNamespace(
            mode=info["mode"], context_frames=info["context_frames"], block_frames=info["block_frames"]
        )
        layout = SimpleNamespace(**info["layout"], to_dict=lambda: dict(info["layout"]))
        return cls(
            info["name"], info["sample_rate"], info["hop"], info["block_seconds"], window,
            dict(info["styles"]), layout,
        )  # fmt: skip


class RemoteEngine:
    """The engine seam of `RemoteInstrument`: `submit` sends a change over the link (or holds it while the
    link is down) and mirrors it onto the fallback; `status`/`latency` ask the host."""

    def __init__(self, link: Link, info: dict, fallback: Instrument | None, net: Any = None) -> None:
        self.link, self.fallback, self.net = link, fallback, net
        self.model_ref = info.get("model_ref", "")
        self.out_rate = info.get("out_rate")
        self.bpm = float(info["state"]["bpm"])
        self.live = None
        self.held: dict[str, Any] = {}  # kind -> value, the last of each, while the link is down
        self.held_events: list[tuple[str, Any]] = []  # drop / reset: each one counts
        self.errors: list[str] = []
        self._status: dict = {}
        self._status_at = 0.0

    def submit(self, kind: str, value: Any = None, at: str | float = "now") -> None:
        if self.fallback is not None:
            try:
                apply_change(self.fallback, kind, value, at)
            except Exception as e:  # the laptop's own model never keeps a change from the host
                self.errors.append(f"fallback: {kind}: {e}")
        if not self.link.send(self.packet(kind, value, at)):
            if kind in ("drop", "reset"):
                self.held_events.append((kind, value))
            else:
                self.held[kind] = value

    def packet(self, kind: str, value: Any, at: str | float) -> bytes:
        args: list[Any] = [kind, to_json(change_value(kind, value))]
        if isinstance(at, str):
            if at != "now":
                args.append("@" + at)
            return message("/lmdm/remote/submit", *args)
        when = host_timetag(at, self.link.offset_s)
        return bundle(when, [message("/lmdm/remote/submit", *args)])

    def send_held(self) -> int:
        """On reconnect: what was played while the link was down, now."""
        n = 0
        for kind in ("params", "gain", "seed"):
            if kind in self.held:
                n += self.link.send(self.packet(kind, self.held.pop(kind), "now"))
        while self.held_events:
            kind, value = self.held_events.pop(0)
            n += self.link.send(self.packet(kind, value, "now"))
        return n

    def cancel_pending(self) -> None:
        self.held.clear()
        self.held_events.clear()

    def _link_figures(self) -> dict:
        figures = {
            "link": "up" if self.link.up else "down",
            "rtt_ms": self.link.rtt_ms,
            "clock_offset_ms": round(self.link.offset_s * 1e3, 2),
            "link_drops": self.link.drops,
            "held_changes": len(self.held) + len(self.held_events),
        }
        if self.net is not None:
            figures["audio_link"] = "up" if self.net.up else "down"
        return figures

    def status(self, timeout: float = 1.0) -> dict:
        """The host's figures and the link's; the last known ones (`stale`) while the link is down."""
        fresh = time.monotonic() - self._status_at < STATUS_REUSE_S
        reply = None
        if self.link.up and not fresh:
            reply = self.link.ask("/lmdm/remote/status", timeout=timeout)
        if reply is not None:
            self._status = json.loads(str(reply.args[1]))
            self._status_at = time.monotonic()
        st = {k: v for k, v in self._status.items() if k not in MIRRORED}
        st.setdefault("blocks", 0)
        st.setdefault("underruns", 0)
        st.setdefault("faults", 0)
        st.setdefault("behind_ms_max", 0.0)
        st["stale"] = not self.link.up or (reply is None and not fresh)
        return {**st, **self._link_figures()}

    def latency(self) -> dict:
        """The host's worst case plus the network's share: half the control round trip, netJACK2's cycles,
        and the laptop's own output buffer."""
        self.status()
        host = dict(self._status.get("latency", {}))
        control = (self.link.rtt_ms or 0.0) / 2
        net = self.net.latency_ms() if self.net is not None else {"netjack_ms": 0.0, "laptop_out_ms": 0.0}
        network = control + net["netjack_ms"] + net["laptop_out_ms"]
        return {
            **host,
            "control_ms": round(control, 2),
            **net,
            "network_ms": round(network, 1),
            "total_ms": round(float(host.get("total_ms", 0.0)) + network, 1),
        }

    @property
    def host_state(self) -> dict:
        """The host's own snapshot, gain, seed and tempo at the last status."""
        return dict(self._status.get("state", {}))

    @property
    def stats(self) -> SimpleNamespace:
        return SimpleNamespace(blocks=int(self.status().get("blocks", 0)))


class RemoteInstrument(Instrument):
    """An Instrument played on `host` (see the module docstring). `fallback`: the laptop's own Instrument,
    kept in step with every change, whose ports `net` connects while the host's audio is gone."""

    def __init__(
        self,
        host: str,
        port: int = DEFAULT_CONTROL_PORT,
        *,
        secret: bytes,
        fallback: Instrument | None = None,
        net: Any = None,
        quiet: bool = False,
        timeout: float = 10.0,
    ) -> None:
        self._say = (lambda msg: None) if quiet else (lambda msg: print(f"lmdm-live: {msg}", file=sys.stderr))
        self.host, self.port = host, int(port)
        self.fallback, self.net = fallback, net
        self.notice: str | None = None
        self.notices = 0
        self.last_host_error = ""
        self.engine: RemoteEngine | None = None
        self.link = Link(host, port, secret, self._up, self._down, self._heard)
        info = self.link.start(timeout)
        self.info = info
        self.model = RemoteModel.of(info)
        self.engine = RemoteEngine(self.link, info, fallback, net)
        self.backend = SimpleNamespace(name=f"netJACK2 from {host}")
        self.stream = None
        self.latency_preset = info.get("latency_preset", "normal")
        self._mirror(info["state"])
        self._notes_on = False
        if fallback is not None:
            for kind, value in (("params", self._params), ("gain", self._gain), ("seed", self._seed)):
                apply_change(fallback, kind, value, "now")

    def _mirror(self, state: dict) -> None:
        self._params = StreamParams.from_dict(state["params"])
        self._gain = float(state["gain"])
        self._unmuted_gain = float(state.get("unmuted_gain", 1.0))
        self._seed = int(state["seed"])
        self._bpm = float(state["bpm"])

    # --- the link's events (on its thread) ------------------------------------------------------------------

    def _up(self, info: dict) -> None:
        if self.engine is None:
            return  # the first connection: __init__ mirrors the host
        sent = self.engine.send_held()
        if not sent:
            self._mirror(info["state"])  # the host kept its state; the laptop plays on from it
        self._say(
            f"the link to {self.host} is back"
            + (f": {sent} change(s) made meanwhile sent" if sent else "; the host kept its state")
        )

    def _down(self, reason: str) -> None:
        plays = "the laptop's own model plays" if self.fallback is not None else "silence"
        self._say(f"the link to {self.host} is down ({reason}): {plays}; changes are held until it is back")

    def _heard(self, m: Incoming) -> None:
        if m.address == "/lmdm/notice" and m.args:
            self.notice = str(m.args[0])
            self.notices += 1
            self._say(self.notice)
        elif m.address == "/lmdm/error" and len(m.args) == 2:
            self.last_host_error = f"{m.args[0]}: {m.args[1]}"
            self._say(f"the host refused {self.last_host_error}")

    # --- what differs from a local instrument --------------------------------------------------------------

    @property
    def threads(self) -> int:
        return 0  # the model runs on the host

    @property
    def dtype(self) -> str:
        return str(self.info.get("dtype", "?"))

    def start(self) -> RemoteInstrument:
        if self.fallback is not None and not self.fallback.engine.running:
            self.fallback.start()
        return self

    def stop(self) -> None:
        self.unwatch()
        self.engine.status()  # the host's last figures, kept for after the link closes
        self.link.close()
        if self.net is not None:
            self.net.close()
        if self.fallback is not None:
            self.fallback.stop()

    def _check_known(self, prompt: str) -> None:
        pass  # the host knows its model's styles: its notice comes back over the link

    def hush(self) -> None:
        self.engine.cancel_pending()
        if self.fallback is not None:
            self.fallback.hush()
        reply = self.link.ask_plain("/lmdm/remote/hush")
        if reply is not None:
            self._mirror(json.loads(str(reply.args[0])))
        else:
            self.gain(0.0)  # held: the host fades out as soon as it hears from the laptop again

    def status(self) -> StatusReport:
        st = super().status()
        st["backend"] = self.backend.name
        return st

    def record(self, path: Any) -> None:
        raise ValueError(
            "a remote instrument records on the host: start it with `lmdm-live serve --record FILE.wav`, "
            "or record the laptop's JACK ports"
        )

    def stop_recording(self) -> None:
        pass

    def wait_blocks(self, n: int, timeout: float = 60.0) -> None:
        start = self.engine.stats.blocks
        end = time.monotonic() + timeout
        while self.engine.stats.blocks < start + n:
            if time.monotonic() > end:
                raise TimeoutError(f"{n} blocks not generated on the host within {timeout} s")
            time.sleep(0.05)

    # --- live input: sent to the host (its `system:capture_N` are the laptop's inputs, over netJACK2) --------

    def _forward(self, address: str, *args: Any) -> None:
        if not self.link.send(message(address, *args)):
            raise ValueError(f"the link to {self.host} is down: {address} was not sent")

    def sketch(self, source: Any, strength: float = 1.0, filter: int = 5, hold: bool = True) -> None:
        self._forward("/lmdm/sketch", str(source), float(strength), int(filter))

    def sketch_off(self) -> None:
        self._forward("/lmdm/sketch/off")

    def sketch_notes(self, on: bool = True) -> None:
        self._forward("/lmdm/sketch/notes", int(bool(on)))
        self._notes_on = bool(on)

    @property
    def notes_drive_sketch(self) -> bool:
        return self._notes_on

    def sketch_note(self, note: int, velocity: int = 100) -> None:
        self._forward("/lmdm/sketch/note", int(note), int(velocity))

    def jam(self, source: Any, t_f: int = 0, mix: float = 0.0) -> None:
        self._forward("/lmdm/jam", str(source), int(t_f), float(mix))

    def jam_off(self) -> None:
        self._forward("/lmdm/jam/off")

    def delay(self, source: Any, blocks: int = 4, prompt: str | None = None) -> None:
        if prompt is not None:
            self.prompt(prompt)
        self._forward("/lmdm/delay", str(source), int(blocks))

    def delay_off(self) -> None:
        self._forward("/lmdm/delay/off")
