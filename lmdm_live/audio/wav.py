"""`WavWriter`: a WAV file whose header is kept true while it is written.

libsndfile writes a WAV header's sizes only when the file is closed, so a recording cut off by a crash or a
SIGKILL says it holds nothing (a RIFF size of 8): Python's `wave`, and many editors, refuse it. Rewriting
the sizes about once a second costs one small seek and write, and leaves a file every reader opens, short
of at most the last second.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf

SFC_UPDATE_HEADER_NOW = 0x1060  # libsndfile's sf_command: write the header's sizes now (sndfile.h)


class WavWriter:
    """Appends float frames (frames, channels) to a new WAV at `target`: a path, or a descriptor opened for
    writing (which it then owns). The header is rewritten every `refresh_s` seconds of audio."""

    def __init__(
        self,
        target: str | Path | int,
        sample_rate: int,
        channels: int,
        subtype: str = "FLOAT",
        refresh_s: float = 1.0,
    ) -> None:
        where = target if isinstance(target, int) else str(target)
        self._file = sf.SoundFile(
            where, "w", int(sample_rate), int(channels), subtype=subtype, format="WAV", closefd=True
        )
        self.frames = 0
        self._every = max(1, int(refresh_s * sample_rate))
        self._due = self._every
        self.update_header()  # from the first moment on, the header describes what is there

    def write(self, frames: np.ndarray) -> None:
        self._file.write(frames)
        self.frames += len(frames)
        if self.frames >= self._due:
            self._due = self.frames + self._every
            self.update_header()

    def update_header(self) -> None:
        """Write the RIFF and data sizes for what is in the file now (and flush it to the system)."""
        self._file.flush()
        handle = getattr(self._file, "_file", None)  # soundfile's SNDFILE*, which it has no call for this
        if handle is not None:
            sf._snd.sf_command(handle, SFC_UPDATE_HEADER_NOW, sf._ffi.NULL, 0)

    def close(self) -> None:
        self._file.close()

    @property
    def closed(self) -> bool:
        return self._file.closed
