"""lmdm_live: a Live Music Diffusion Model, Stable Audio Open Small's DiT made streaming and playable live."""

__version__ = "0.1.0"
