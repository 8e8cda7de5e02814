"""The laptop's control connection to `lmdm-live serve`: connect, answer the challenge, ping, ask and send,
and reconnect when the link drops. Its own thread owns the socket's reading; any control thread may send.

Every half second a ping carries the laptop's clock and comes back with the host's: the round trip is the
control path's share of the latency, and the offset between the clocks turns a laptop `at=` instant or
OSC timetag into the host's time, so quantised and timed changes land on the beat they were meant for.
"""

from __future__ import annotations

import itertools
import json
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from .osc_wire import Incoming, Undecodable, decode
from .remote_wire import VERSION, Deframer, ProtocolError, answer, frame, message

PING_S = 0.5
DEAD_S = 2.5  # no packet for this long: the link is down
RETRY_S = 0.5
CONNECT_TIMEOUT_S = 2.0


class AuthRefused(ConnectionError):
    """The host turned the laptop away (wrong secret, not on its allow-list)."""


class Link:
    """One host's control channel. `on_up(info)` runs on the link's thread once a connection is made and
    authenticated (before other threads may send on it), `on_down(reason)` when it drops; `on_message(m)`
    for what the host says unasked (errors, notices)."""

    def __init__(
        self,
        host: str,
        port: int,
        secret: bytes,
        on_up: Callable[[dict], None] | None = None,
        on_down: Callable[[str], None] | None = None,
        on_message: Callable[[Incoming], None] | None = None,
    ) -> None:
        self.host, self.port, self.secret = host, int(port), secret
        self.on_up, self.on_down, self.on_message = on_up, on_down, on_message
        self.up = False
        self.connects = 0  # authenticated connections so far
        self.drops = 0
        self.last_error = ""
        self.rtts: deque[tuple[float, float]] = deque(maxlen=16)  # (round trip s, host clock - laptop clock)
        self._sock: socket.socket | None = None
        self._send_lock = threading.Lock()
        self._ids = itertools.count(1)
        self._waiting: dict[Any, list] = {}  # key -> [Event, reply]
        self._wait_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # --- lifecycle ------------------------------------------------------------------------------------------

    def start(self, timeout: float = 10.0) -> dict:
        """Connect (in the link's thread) and wait for the first authenticated connection: the host's
        info. ConnectionError with one clear line when it cannot be had within `timeout`."""
        first: list = [threading.Event(), None]
        self._waiting["first"] = first
        self._thread = threading.Thread(target=self._run, name="lmdm-link", daemon=True)
        self._thread.start()
        if not first[0].wait(timeout) or isinstance(first[1], BaseException):
            self.close()
            why = first[1] if isinstance(first[1], BaseException) else self.last_error or "no answer"
            raise ConnectionError(f"cannot play the host at {self.host}:{self.port}: {why}")
        return first[1]

    def close(self) -> None:
        self._stop.set()
        self._drop()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)

    # --- figures --------------------------------------------------------------------------------------------

    @property
    def rtt_ms(self) -> float | None:
        return round(min(r for r, _ in self.rtts) * 1e3, 2) if self.rtts else None

    @property
    def offset_s(self) -> float:
        """Host clock minus laptop clock, from the ping with the shortest round trip (the least skewed)."""
        return min(self.rtts)[1] if self.rtts else 0.0

    # --- sending and asking ---------------------------------------------------------------------------------

    def send(self, packet: bytes) -> bool:
        """Send one OSC packet; False (and the link marked down) when it cannot go out."""
        sock = self._sock
        if sock is None or not self.up:
            return False
        try:
            with self._send_lock:
                sock.sendall(frame(packet))
            return True
        except OSError as e:
            self.last_error = f"send: {e}"
            self._drop()
            return False

    def ask(self, address: str, *args: Any, timeout: float = 1.0) -> Incoming | None:
        """Send `address` with a fresh id first and wait for the host's reply carrying that id."""
        rid = next(self._ids)
        slot: list = [threading.Event(), None]
        with self._wait_lock:
            self._waiting[rid] = slot
        try:
            if not self.send(message(address, rid, *args)) or not slot[0].wait(timeout):
                return None
            return slot[1]
        finally:
            with self._wait_lock:
                self._waiting.pop(rid, None)

    def ask_plain(self, address: str, timeout: float = 1.0) -> Incoming | None:
        """Send `address` (no id: one at a time) and wait for the reply to the same address."""
        slot: list = [threading.Event(), None]
        with self._wait_lock:
            self._waiting[address] = slot
        try:
            if not self.send(message(address)) or not slot[0].wait(timeout):
                return None
            return slot[1]
        finally:
            with self._wait_lock:
                self._waiting.pop(address, None)

    # --- the link's thread ----------------------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._session()
            except AuthRefused as e:
                self.last_error = str(e)
                self._settle_first(e)
            except (OSError, ProtocolError, Undecodable, TimeoutError) as e:
                self.last_error = str(e) or type(e).__name__
            was_up = self.up
            self._drop()
            if was_up:
                self.drops += 1
                if self.on_down is not None:
                    self.on_down(self.last_error)
            self._stop.wait(RETRY_S)

    def _session(self) -> None:
        sock = socket.create_connection((self.host, self.port), timeout=CONNECT_TIMEOUT_S)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._sock = sock
        deframer = Deframer()
        hello = self._next(sock, deframer, CONNECT_TIMEOUT_S)
        if hello.address == "/lmdm/error":
            raise AuthRefused(str(hello.args[-1]) if hello.args else "refused")
        if hello.address != "/lmdm/remote/hello" or len(hello.args) != 2 or hello.args[1] != VERSION:
            raise ProtocolError(f"not an lmdm-live host of version {VERSION} ({hello.address})")
        sock.sendall(frame(message("/lmdm/remote/auth", answer(self.secret, str(hello.args[0])))))
        sock.sendall(frame(message("/lmdm/remote/info")))
        info_msg = self._next(sock, deframer, CONNECT_TIMEOUT_S)
        if info_msg.address == "/lmdm/error":
            raise AuthRefused(str(info_msg.args[-1]) if info_msg.args else "refused")
        if info_msg.address != "/lmdm/remote/info":
            raise ProtocolError(f"expected the host's info, got {info_msg.address}")
        info = json.loads(str(info_msg.args[0]))
        self._ping(sock)
        self.up = True
        self.connects += 1
        if self.on_up is not None:
            self.on_up(info)
        self._settle_first(info)
        self._read(sock, deframer)

    def _next(self, sock: socket.socket, deframer: Deframer, timeout: float) -> Incoming:
        """The next message, during the handshake."""
        sock.settimeout(timeout)
        pending = getattr(self, "_pending", [])
        while not pending:
            data = sock.recv(1 << 16)
            if not data:
                raise ConnectionError("the host closed the connection")
            for packet in deframer.feed(data):
                pending.extend(decode(packet))
        self._pending = pending[1:]
        return pending[0]

    def _read(self, sock: socket.socket, deframer: Deframer) -> None:
        sock.settimeout(PING_S / 2)
        last_heard = last_ping = time.monotonic()
        for m in getattr(self, "_pending", []):
            self._handle(m)
        self._pending = []
        while not self._stop.is_set():
            now = time.monotonic()
            if now - last_ping >= PING_S:
                self._ping(sock)
                last_ping = now
            if now - last_heard > DEAD_S:
                raise TimeoutError(f"no answer from the host for {DEAD_S:g} s")
            try:
                data = sock.recv(1 << 16)
            except TimeoutError:
                continue
            if not data:
                raise ConnectionError("the host closed the connection")
            last_heard = time.monotonic()
            for packet in deframer.feed(data):
                for m in decode(packet):
                    self._handle(m)

    def _ping(self, sock: socket.socket) -> None:
        with self._send_lock:
            sock.sendall(frame(message("/lmdm/remote/ping", 0, time.time())))

    def _handle(self, m: Incoming) -> None:
        a = m.args
        if m.address == "/lmdm/remote/pong" and len(a) == 3:
            back = time.time()
            sent, host_t = float(a[1]), float(a[2])
            self.rtts.append((back - sent, host_t - (sent + back) / 2))
            return
        key = a[0] if m.address == "/lmdm/remote/status" and a else m.address
        with self._wait_lock:
            slot = self._waiting.get(key)
        if slot is not None:
            slot[1] = m
            slot[0].set()
        elif self.on_message is not None:
            self.on_message(m)

    def _settle_first(self, result: Any) -> None:
        first = self._waiting.pop("first", None)
        if first is not None:
            first[1] = result
            first[0].set()

    def _drop(self) -> None:
        self.up = False
        sock, self._sock = self._sock, None
        self._pending = []
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()
