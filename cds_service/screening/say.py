"""One line of the command line's own, to the terminal: what the screen and worklist commands say."""

from __future__ import annotations

from rich.console import Console


def say(err: Console, text: str) -> None:
    """One line of plain text: markup and highlighting off, whatever the text holds."""
    err.print(text, markup=False, highlight=False, soft_wrap=True)  # one line, whatever the terminal width
