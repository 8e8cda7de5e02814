"""The progress bar every training stage shows: silent (bar and messages) on every torchrun rank but 0."""

from __future__ import annotations


def progress_bar(description: str):
    """A rich progress bar with an `info` field beside the count and the time left."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from .distributed import world_from_env

    quiet = not world_from_env().main
    return Progress(
        TextColumn(description),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        TimeRemainingColumn(),
        console=Console(quiet=True) if quiet else None,
        disable=quiet,
    )
