"""The laptop's end of netJACK2: JACK's `netmanager` on the laptop's server, and a watcher that plays what
a remote host sends.

A host running `jackd -d net` joins the laptop's server as a client named after it, with one
`<name>:from_slave_N` port per channel it sends (and `<name>:to_slave_N` for what it receives). The
laptop's sound card clocks both servers, so there is no resampling and no drift, and the float samples
arrive as the host made them. `NetLink` connects those ports to the speakers while they exist; when they
go (the link dropped), it says so and, if there is one, connects a fallback's ports instead.
"""

from __future__ import annotations

import re
import subprocess
import threading
from collections.abc import Callable, Sequence
from typing import Any

from .backend import BackendUnavailable
from .jack_client import capture_latency, import_jack, open_client, playback_latency

DEFAULT_NET_PORT = 19000  # netJACK2's UDP port
ALREADY_LOADED = "0x 5"  # jack_load's status when an internal client of that name runs: failure | name taken


def load_netmanager(server: str | None, listen: str | None, port: int = DEFAULT_NET_PORT) -> bool:
    """Load JACK's netmanager (the netJACK2 master) into the laptop's server. `listen`: the address it
    waits for hosts on (an IP of this machine, or a multicast group; None: netJACK2's multicast default).
    True when loaded now, False when it was already running."""
    init = f"-p {int(port)}" + (f" -a {listen}" if listen else "")
    cmd = ["jack_load", *(["-s", server] if server else []), "netmanager", "-i", init]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
    except FileNotFoundError:
        raise BackendUnavailable("jack_load is not installed (the jackd2 package)") from None
    except subprocess.TimeoutExpired:
        raise BackendUnavailable("jack_load netmanager did not answer within 10 s") from None
    if done.returncode == 0:
        return True
    said = (done.stdout + done.stderr).strip()
    if ALREADY_LOADED in said:
        return False
    raise BackendUnavailable(
        f"cannot load JACK's netmanager: {said.splitlines()[-1] if said else done.returncode}"
    )


class NetLink:
    """Watches for a netJACK2 host's ports and keeps them connected to `targets` (True: the physical
    playback ports; a string: the input ports whose names start with it).

    `host_name`: the host's client name on this server (None: the first that appears). `fallback`: ports
    played instead while the host's are gone. `capture`: also send the physical capture ports to the host
    (a hummed sketch or a jam partner, heard there as `system:capture_N`). `on_change(up)` runs on the
    watcher thread when the host's ports appear or go."""

    def __init__(
        self,
        host_name: str | None = None,
        targets: bool | str = True,
        fallback: Sequence[str] = (),
        capture: bool = True,
        server_name: str | None = None,
        on_change: Callable[[bool], None] | None = None,
        poll_s: float = 0.1,
    ) -> None:
        self._jack = import_jack()
        self.client = open_client(self._jack, "lmdm-link", server_name)
        self.client.activate()
        self.host_name, self.targets, self.fallback = host_name, targets, list(fallback)
        self.capture, self.on_change, self.poll_s = capture, on_change, poll_s
        self.sample_rate = int(self.client.samplerate)
        self.up = False
        self.changes = 0  # times the host's ports appeared or went
        self.errors = 0
        self.last_error = ""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> NetLink:
        self.poll()
        self._thread = threading.Thread(target=self._run, name="lmdm-netlink", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        try:
            self.client.deactivate()
            self.client.close()
        except self._jack.JackError:
            pass  # the server is gone already

    def _run(self) -> None:
        while not self._stop.wait(self.poll_s):
            try:
                self.poll()
            except Exception as e:  # the watcher outlives a port that vanished under it
                self.errors += 1
                self.last_error = f"{type(e).__name__}: {e}"

    # --- one look at the graph ------------------------------------------------------------------------------

    def host_ports(self, direction: str = "from_slave") -> list[Any]:
        name = re.escape(self.host_name) if self.host_name else r"[^:]+"
        pattern = re.compile(rf"^{name}:{direction}_(\d+)$")
        found = [p for p in self.client.get_ports(is_audio=True) if pattern.match(p.name)]
        return sorted(found, key=lambda p: int(pattern.match(p.name).group(1)))

    def _targets(self) -> list[Any]:
        if self.targets is True:
            return self.client.get_ports(is_audio=True, is_input=True, is_physical=True)
        prefix = str(self.targets)
        return [p for p in self.client.get_ports(is_audio=True, is_input=True) if p.name.startswith(prefix)]

    def _link(self, sources: Sequence[Any], targets: Sequence[Any], on: bool) -> None:
        pairs = list(zip(sources, targets))
        if len(sources) == 1 and len(targets) >= 2:
            pairs = [(sources[0], targets[0]), (sources[0], targets[1])]
        for src, dst in pairs:
            connected = dst.name in {c.name for c in self.client.get_all_connections(src)}
            if on and not connected:
                self.client.connect(src, dst)
            elif not on and connected:
                self.client.disconnect(src, dst)

    def poll(self) -> bool:
        ports = self.host_ports()
        targets = self._targets()
        fallback = [self.client.get_port_by_name(n) for n in self.fallback]
        up = bool(ports)
        if up:
            self._link(fallback, targets, False)
            self._link(ports, targets, True)
            if self.capture:
                mics = self.client.get_ports(is_audio=True, is_output=True, is_physical=True)
                self._link(mics, self.host_ports("to_slave"), True)
        else:
            self._link(fallback, targets, True)
        if up != self.up:
            self.up = up
            self.changes += 1
            if self.on_change is not None:
                self.on_change(up)
        return up

    # --- figures --------------------------------------------------------------------------------------------

    def latency_ms(self) -> dict[str, float]:
        """The network driver's share (the host's ports' capture latency: netJACK2's cycles of latency) and
        the laptop's own playback latency, in ms; 0 where JACK cannot tell."""
        try:
            net = max((capture_latency(self._jack, p) for p in self.host_ports()), default=0)
            out = max((playback_latency(self._jack, p) for p in self._targets()), default=0)
        except self._jack.JackError:
            net = out = 0
        return {
            "netjack_ms": round(net / self.sample_rate * 1e3, 1),
            "laptop_out_ms": round(out / self.sample_rate * 1e3, 1),
        }
