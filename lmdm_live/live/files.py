"""Files that someone else names: a recording an OSC client starts, a patch it asks for by name.

A client on the network must not choose where the instrument writes or what it reads. So a name it sends
is a path *inside* one directory the performer chose: no absolute path, no `..`, no `~`, never through a
symbolic link, never into a folder that does not exist (none is created), never over a file that exists.
The checks are the system's own (`O_NOFOLLOW`, `O_EXCL`, one directory at a time), so nothing can swap a
file in between a check and the open. Reads learn the size from the open file before reading any of it.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path


class Refused(ValueError):
    """A name that would leave its directory, follow a link, overwrite a file, or read too much."""


def parts_of(ref: str, what: str) -> list[str]:
    """The folders and file name of a relative `ref`, each one an ordinary name; Refused otherwise."""
    if not isinstance(ref, str) or not ref.strip():
        raise Refused(f"{what} is empty")
    if "\x00" in ref or "\\" in ref:
        raise Refused(f"{what} may not hold NUL bytes or backslashes")
    if ref.startswith("/"):
        raise Refused(f"{what} must be relative to its directory, not an absolute path")
    if ref.startswith("~"):
        raise Refused(f"{what} may not start with '~' (no home folders: it is relative to its directory)")
    parts = [p for p in ref.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise Refused(f"{what} may not leave its directory ('..')")
    if not parts:
        raise Refused(f"{what} names no file")
    return parts


def create_new(root: Path, ref: str, what: str = "the file") -> int:
    """Create `ref` under `root` for writing and return its descriptor. Refused if it would leave `root`,
    pass through a symbolic link, need a folder that does not exist, or replace anything that exists."""
    parts = parts_of(ref, what)
    try:
        fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as e:
        raise Refused(f"the directory for {what} cannot be opened ({e.strerror})") from None
    try:
        for k, part in enumerate(parts[:-1], 1):
            here = "/".join(parts[:k])
            try:
                inner = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
            except FileNotFoundError:
                raise Refused(f"folder {here!r} does not exist (folders are never created)") from None
            except OSError:  # ELOOP or ENOTDIR: a symbolic link, or a file
                raise Refused(f"{here!r} is not a folder (symbolic links are not followed)") from None
            os.close(fd)
            fd = inner
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            return os.open(parts[-1], flags, 0o644, dir_fd=fd)
        except FileExistsError:  # a dangling symbolic link exists too
            raise Refused(f"{'/'.join(parts)!r} exists; a new file never replaces one") from None
        except OSError as e:
            raise Refused(f"{'/'.join(parts)!r} cannot be created ({e.strerror})") from None
    finally:
        os.close(fd)


def read_small(
    path: str | Path, limit: int, kind: str = "a file", follow: bool = True, dir_fd: int | None = None
) -> bytes:
    """The bytes of a regular file of at most `limit` bytes, its size checked before any is read (`kind`
    names what it should be, in the message). FileNotFoundError when it is not there; Refused for a link
    (follow=False), a device, a pipe or a file over the limit."""
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | (0 if follow else os.O_NOFOLLOW)
    try:
        fd = os.open(path, flags, dir_fd=dir_fd)
    except FileNotFoundError:
        raise
    except OSError as e:
        if not follow and e.errno == errno.ELOOP:
            raise Refused("a symbolic link (not followed)") from None
        raise Refused(f"cannot be read ({e.strerror})") from None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise Refused("not a regular file")
        if st.st_size > limit:
            raise Refused(f"{st.st_size} bytes is too large for {kind} (at most {limit}); not read")
        data = f.read(limit + 1)
    if len(data) > limit:  # it grew while being read
        raise Refused(f"over {limit} bytes is too large for {kind}; not read")
    return data
