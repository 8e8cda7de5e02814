"""lmdm_live: a Live Music Diffusion Model, Stable Audio Open Small's DiT made streaming and playable live."""

__version__ = "0.1.0"

__all__ = ["Instrument", "LMDMStream", "StreamParams"]


def __getattr__(name: str):
    """Import lazily: `import lmdm_live` stays cheap; torch loads when the instrument is first used."""
    if name == "Instrument":
        from .live.instrument import Instrument

        return Instrument
    if name in ("LMDMStream", "StreamParams"):
        from .live import stream

        return getattr(stream, name)
    raise AttributeError(f"module 'lmdm_live' has no attribute {name!r}")
