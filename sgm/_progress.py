"""Progress bars that suit where the output goes: tqdm's bar on a terminal, and otherwise (a
log file, a pipe, a batch job) an occasional plain line instead of a stream of carriage
returns."""

import sys

from tqdm.auto import tqdm

# Seconds between the plain lines written when the output is not a terminal.
PLAIN_INTERVAL = 30.0


class _Lines:
    """A stream for tqdm that writes each refresh as one line (tqdm rewrites its line with
    `\\r`, which a log file keeps as one growing line)."""

    def __init__(self, stream):
        self.stream = stream

    def write(self, text: str) -> None:
        text = text.replace("\r", "").strip()
        if text:
            self.stream.write(text + "\n")

    def flush(self) -> None:
        self.stream.flush()


def progress(iterable=None, *, disable: bool = False, **kwargs) -> tqdm:
    """`tqdm(iterable, **kwargs)` on a terminal; otherwise a bar that writes a plain line at
    most every `PLAIN_INTERVAL` seconds (and when it closes). Every progress bar of sgm and
    of its application is made here."""
    stream = sys.stderr
    if disable or stream.isatty():
        return tqdm(iterable, disable=disable, **kwargs)
    return tqdm(
        iterable,
        file=_Lines(stream),
        mininterval=PLAIN_INTERVAL,
        maxinterval=PLAIN_INTERVAL,
        dynamic_ncols=False,
        ncols=100,
        ascii=True,
        **kwargs,
    )
