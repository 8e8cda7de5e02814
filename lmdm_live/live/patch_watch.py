"""Hot reload: a patch file played again on every save; a broken save is reported and the sound plays on."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .files import Refused, read_small
from .patch import (
    MAX_PATCH_BYTES,
    Patch,
    PatchControls,
    PatchError,
    apply_patch,
    find_patch,
    load_patch,
    parse_patch,
)

log = logging.getLogger(__name__)

# --- hot reload ------------------------------------------------------------------------------------------


class PatchWatcher:
    """Polls a patch file and hands each good new version to `on_change(patch)`.

    A daemon thread rather than an asyncio task: reading and hashing a file is blocking I/O that must not
    stall the control loop, and a thread also works from a plain script or the stock Python REPL, where no
    loop runs. Given a `loop`, callbacks run on it (`call_soon_threadsafe`), beside the other controls.

    A change is noticed from the file's mtime/size/inode, and also by re-hashing it every second (on file
    systems with coarse timestamps a quick save can keep all three). A save is judged once the file has held
    still for one interval, so a half-written file is not mistaken for a broken one. A broken save is reported to
    `on_error(message)` once (and not applied: the running patch keeps playing); the next good save applies.
    Saves that come faster than the interval are read as they come: when they stop on a broken one, the newest
    good version among them is applied (an empty file is not a good version).
    """

    def __init__(
        self,
        path: str | Path,
        on_change: Callable[[Patch], Any],
        interval: float = 0.25,
        on_error: Callable[[str], Any] | None = None,
        loop: asyncio.AbstractEventLoop | None = None,
        digest: str | None = None,
    ) -> None:
        if not (isinstance(interval, int | float) and 0.01 <= interval <= 60):
            raise ValueError(f"interval must be in 0.01..60 seconds, got {interval!r}")
        self.path = Path(path)
        self.on_change, self.on_error, self.loop = on_change, on_error, loop
        self.interval = float(interval)
        self.applied = 0
        self.rejected = 0
        self.last_error: str | None = None
        self.patch: Patch | None = None
        self._digest = digest  # the content last judged (None: judge the file as it is now)
        self._good = digest  # the content of the version last handed to on_change
        self._candidate: Patch | None = None  # the newest good version seen while the file kept changing
        self._seen: tuple | None = None  # the file's (mtime, size, inode) at the last poll
        self._judged: tuple | None = None  # ... when its content was last read
        self._changed_at: float | None = None  # when the file last changed, until it is judged
        self._hashed_at = 0.0  # when its content was last read to judge it
        self._missing = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> PatchWatcher:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._run, name=f"patch-watch {self.path.name}", daemon=True
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)
        self._thread = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.poll()
            except Exception as e:  # never let the watcher die silently
                self._report(f"{self.path.name}: watcher error: {type(e).__name__}: {e}")
            # while saves come, look five times an interval: each one is read before the next replaces it
            self._stop.wait(self.interval / 5 if self._changed_at is not None else self.interval)

    def poll(self) -> bool:
        """One check; True when a new version was judged (applied or rejected)."""
        try:
            st = self.path.stat()
        except OSError:
            if not self._missing:
                self._missing = True
                self._report(f"{self.path.name}: the file is gone; the running patch keeps playing")
            self._seen = None
            self._changed_at = None
            return False
        self._missing = False
        key = (st.st_mtime_ns, st.st_size, st.st_ino)
        now = time.monotonic()
        if key != self._seen:  # changed since the last look: judge it once it has held still for an interval
            self._seen, self._changed_at = key, now
            self._remember_if_good(key)
            return False
        if self._changed_at is not None and now - self._changed_at < self.interval * 0.99:
            return False
        self._changed_at = None
        rehash = now - self._hashed_at >= 1.0
        if key == self._judged and not rehash:
            return False
        self._hashed_at = now
        data = self._read(key)
        if data is None:
            return False
        self._judged = key
        digest = hashlib.sha256(data).hexdigest()
        good, self._candidate = self._candidate, None
        if good is not None and good.digest in (digest, self._good):
            good = None  # the newest content is that version, or it plays already
        seen_before = digest == self._digest
        if seen_before and good is None:
            return False
        self._digest = digest
        try:
            patch = parse_patch(data, self.path)
        except PatchError as e:
            if not seen_before:
                self.rejected += 1
                then = "applying the last good save instead" if good else "the running patch keeps playing"
                self._report(f"{e} (not applied; {then})")
            if good is not None:
                self._hand(good)
            return True
        if patch.digest != self._good:
            self._hand(patch)
        return True

    def _read(self, key: tuple) -> bytes | None:
        """The file's bytes if it is still `key` after reading them (None: too big, gone, or being written)."""
        if key[1] > MAX_PATCH_BYTES:  # not a patch: say so once, never read it
            if self._digest != f"size {key[1]}":
                self._digest = f"size {key[1]}"
                self.rejected += 1
                self._report(f"{self.path.name}: {key[1]} bytes is too large for a patch; not read")
            self._judged = key
            return None
        try:
            data = read_small(self.path, MAX_PATCH_BYTES, "a patch")
            after = self.path.stat()
        except (Refused, OSError):
            return None
        if (after.st_mtime_ns, after.st_size, after.st_ino) != key:
            return None  # written to while being read: look again next time
        return data

    def _remember_if_good(self, key: tuple) -> None:
        """While saves keep coming (faster than the interval, the file never holds still), keep the newest
        version that is a good patch: if the saves stop on a broken one, that is the one to play."""
        data = self._read(key) if key[1] <= MAX_PATCH_BYTES else None
        if data is None:
            return
        try:
            self._candidate = parse_patch(data, self.path)
        except PatchError:
            pass

    def _hand(self, patch: Patch) -> None:
        self._good = patch.digest
        if self.loop is not None and not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self._deliver, patch)
        else:
            self._deliver(patch)

    def _deliver(self, patch: Patch) -> None:
        try:
            self.on_change(patch)
        except Exception as e:  # e.g. a patch for another model: reported, the sound goes on
            self.rejected += 1
            msg = str(e).splitlines()[0] if str(e) else type(e).__name__
            self._report(f"{msg} (not applied; the running patch keeps playing)")
            return
        self.applied += 1
        self.patch = patch
        self.last_error = None

    def _report(self, msg: str) -> None:
        self.last_error = msg
        if self.on_error is None:
            log.warning("%s", msg)
            return
        try:
            self.on_error(msg)
        except Exception:
            log.exception("patch watcher: on_error failed")


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def watch_patch(
    inst,
    ref: str | Path,
    at: Any = "bar",
    on_load: Callable[[PatchControls], Any] | None = None,
    on_error: Callable[[str], Any] | None = None,
    interval: float = 0.25,
) -> PatchWatcher:
    """Load and apply a patch now (raising if it is bad), then re-apply it on every good save.

    Called from the REPL (inside the asyncio loop), later changes are applied on that loop, in turn with the
    performer's own lines; from a plain script they are applied from the watcher's thread.
    """
    path = find_patch(ref)
    patch = load_patch(path)
    controls = apply_patch(inst, patch, at)
    if on_load is not None:
        on_load(controls)

    def changed(p: Patch) -> None:
        c = apply_patch(inst, p, at)
        if on_load is not None:
            on_load(c)

    w = PatchWatcher(
        path, changed, interval=interval, on_error=on_error, loop=_running_loop(), digest=patch.digest
    )
    w.patch = patch
    return w.start()
