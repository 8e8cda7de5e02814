"""A host and a laptop on one machine: two JACK servers joined by netJACK2 on loopback, `lmdm-live serve`
in a process of its own on the host's, and what the laptop's side needs to cut and restore the link.

The laptop's server runs the dummy driver (the "sound card") with JACK's netmanager; the host's runs
`jackd -d net`, started by `lmdm-live serve --net-master`, so it is clocked by the laptop's as on stage.
"""

from __future__ import annotations

import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

from lmdm_live.audio.jack_client import import_jack, open_client

SECRET = "loopback-secret-0123456789"
RATE, PERIOD = 48000, 256
NET_LATENCY = 2  # netJACK2 periods
ROOT = Path(__file__).resolve().parents[2]


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def jack_running(name: str) -> bool:
    out = subprocess.run(["jack_wait", "-c", "-s", name], capture_output=True, text=True).stdout
    return out.strip() == "running"


class LaptopServer:
    """The laptop's JACK server (dummy driver) with netmanager listening on loopback: `name`, a server
    that runs already (the tests' own), or a new one.

    libjack joins a process to one server at a time (while any client of the process is open, a new client
    goes to the same server, whatever name it asks for), so the laptop's side of the tests runs on the
    server every other test in the process uses, and the host's server is only touched from other
    processes (`serve`, `jack_connect`)."""

    def __init__(self, name: str | None = None) -> None:
        self.proc = None
        self.loaded = False
        self.name = name or f"lmdm-lap-{os.getpid()}"
        self.udp = free_port(socket.SOCK_DGRAM)
        if name is None:
            self.proc = subprocess.Popen(
                [
                    "jackd",
                    "-n",
                    self.name,
                    "--no-realtime",
                    "-d",
                    "dummy",
                    "-r",
                    str(RATE),
                    "-p",
                    str(PERIOD),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        end = time.monotonic() + 20
        while not jack_running(self.name):
            if time.monotonic() > end or (self.proc is not None and self.proc.poll() is not None):
                raise RuntimeError(f"the laptop's JACK server {self.name!r} is not running")
            time.sleep(0.1)
        self.load_netmanager()

    def load_netmanager(self) -> None:
        subprocess.run(
            ["jack_load", "-s", self.name, "netmanager", "-i", f"-a 127.0.0.1 -p {self.udp}"],
            check=True,
            capture_output=True,
            timeout=20,
        )
        self.loaded = True

    def unload_netmanager(self) -> None:
        """Cut the audio link: the host's ports leave this server, and its server stops being clocked.
        Done while a host is still joined it takes milliseconds; after the last host left, jack_unload can
        hang (then the server is stopped without it)."""
        if self.loaded:
            self.loaded = False
            try:
                subprocess.run(["jack_unload", "netmanager", self.name], capture_output=True, timeout=10)
            except subprocess.TimeoutExpired:
                pass

    def close(self) -> None:
        self.unload_netmanager()  # a server that still holds it takes 12 s to stop
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


def host_model(folder: Path) -> Path:
    """The tiny model at 186 ms blocks (16/8, Block-Causal), sampling in 2 steps: at the preset's 8 it runs
    about 1.2x real time on one thread, so the host's sound has gaps wherever a core is a little slower."""
    from lmdm_live.model.bundle import LMDMModel
    from lmdm_live.model.lmdm import LMDMConfig

    path = folder / "tiny-host.safetensors"
    model = LMDMModel.preset(
        "tiny", lmdm=LMDMConfig(mode="causal", context_frames=16, block_frames=8), seed=0
    )
    model.sampler = {"sampler": "pingpong", "steps": 2, "cfg": 1.0}
    model.save(path)
    return path


class Host:
    """`lmdm-live serve` with the tiny model (186 ms blocks) in a process of its own."""

    def __init__(
        self, laptop: LaptopServer, model: Path, record: Path | None = None, extra: tuple[str, ...] = ()
    ) -> None:
        self.jack = f"lmdm-host-{os.getpid()}"
        self.net_name = f"lmdm-host-{os.getpid()}"
        cmd = [sys.executable, "-m", "lmdm_live.cli", "serve", "--model", str(model), "--port", "0"]
        cmd += ["--jack-server", self.jack]
        cmd += ["--net-master", "127.0.0.1", "--net-port", str(laptop.udp), "--net-name", self.net_name]
        cmd += ["--net-latency", str(NET_LATENCY), "--threads", "1", *extra]
        self.log = Path(extra[extra.index("--log") + 1]) if "--log" in extra else None
        if record is not None:
            cmd += ["--record", str(record)]
        env = {**os.environ, "LMDM_REMOTE_SECRET": SECRET, "JACK_NO_START_SERVER": "1"}
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True)
        self.lines: list[str] = []
        self.port = 0
        end = time.monotonic() + 90
        while not self.port:
            if self.proc.poll() is not None or time.monotonic() > end:
                raise RuntimeError("lmdm-live serve did not come up:\n" + "".join(self.lines))
            ready, _, _ = select.select([self.proc.stderr], [], [], 0.5)
            if ready:
                line = self.proc.stderr.readline()
                self.lines.append(line)
                if " serving " in line:
                    self.port = int(line.rsplit(":", 1)[1])
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self) -> None:
        for line in self.proc.stderr:
            self.lines.append(line)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(30)


class Relay:
    """A TCP relay standing in for the network (or an ssh tunnel) between laptop and host: `cut()` closes
    every connection through it and refuses new ones, `restore()` lets them through again."""

    def __init__(self, target_port: int) -> None:
        self.target = ("127.0.0.1", target_port)
        self.port = free_port()
        self._conns: list[socket.socket] = []
        self._listener: socket.socket | None = None
        self.restore()

    def restore(self) -> None:
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", self.port))
        s.listen(4)
        self._listener = s
        threading.Thread(target=self._accept, args=(s,), daemon=True).start()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                a, _ = listener.accept()
            except OSError:
                return
            b = socket.create_connection(self.target)
            self._conns += [a, b]
            for src, dst in ((a, b), (b, a)):
                threading.Thread(target=self._pipe, args=(src, dst), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def cut(self) -> None:
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        for c in self._conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            c.close()
        self._conns = []


class RoundTrip:
    """A JACK client on the laptop's server that sends one impulse into `dest` and waits for it to come back
    on `source`: the frames between, counted by its own cycles' frame times (xruns cannot skew them)."""

    def __init__(self, server: str, dest: str, source: str) -> None:
        self._jack = import_jack()
        self.client = open_client(self._jack, "lmdm-roundtrip", server)
        self.out = self.client.outports.register("out")
        self.inp = self.client.inports.register("in")
        self.sent: int | None = None
        self.back: int | None = None
        self._armed = False
        self.client.set_process_callback(self._process)
        self.client.activate()
        self.client.connect(self.out, dest)
        self.client.connect(source, self.inp)

    def _process(self, frames: int) -> None:
        buf = self.out.get_array()
        buf.fill(0.0)
        if self._armed and self.sent is None:
            buf[0] = 1.0
            self.sent = self.client.last_frame_time
        elif self.sent is not None and self.back is None:
            hits = np.flatnonzero(np.abs(self.inp.get_array()) > 0.5)
            if hits.size:
                self.back = self.client.last_frame_time + int(hits[0])

    def fire(self) -> None:
        self._armed = True

    @property
    def frames(self) -> int | None:
        return None if self.back is None else (self.back - self.sent) & 0xFFFFFFFF

    def close(self) -> None:
        self.client.deactivate()
        self.client.close()


class Meter:
    """A JACK client on the laptop's server noting each cycle's frame time and level of `sources`."""

    def __init__(self, server: str, sources: list[str], cycles: int = 1 << 16) -> None:
        self._jack = import_jack()
        self.client = open_client(self._jack, "lmdm-meter", server)
        self.ports = [self.client.inports.register(f"in_{i + 1}") for i in range(len(sources))]
        self.times = np.zeros(cycles, dtype=np.int64)
        self.levels = np.zeros(cycles, dtype=np.float64)
        self.n = 0
        self.client.set_process_callback(self._process)
        self.client.activate()
        for src, port in zip(sources, self.ports):
            self.client.connect(src, port)

    def _process(self, frames: int) -> None:
        if self.n < len(self.times):
            self.times[self.n] = self.client.last_frame_time
            self.levels[self.n] = max(float(np.sqrt(np.mean(p.get_array() ** 2))) for p in self.ports)
            self.n += 1

    def now(self) -> int:
        return self.client.frame_time

    def first_below(self, after: int, level: float) -> int | None:
        """The frame time of the first cycle from `after` on whose level is below `level`."""
        times, levels = self.times[: self.n], self.levels[: self.n]
        late = ((times - after) & 0xFFFFFFFF) < (1 << 31)
        hit = np.flatnonzero(late & (levels < level))
        return int(times[hit[0]]) if hit.size else None

    def close(self) -> None:
        self.client.deactivate()
        self.client.close()


def connect_on(server: str, src: str, dst: str) -> None:
    """Connect two ports on another server than this process's (see LaptopServer)."""
    subprocess.run(["jack_connect", "-s", server, src, dst], check=True, capture_output=True, timeout=10)
