"""Where the command line writes: results to stdout, everything else to stderr.

Results (tables, JSON) go to standard output, so ``kerasprune summary m.keras --json | jq``
works. Progress bars, per-round lines, notes and warnings go to standard error, and ``-q``
silences them. While a command works, Python's ``sys.stdout`` is pointed at standard error,
so that Keras' progress bars and the library's own prints never mix with the results.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import warnings
from collections.abc import Iterator
from typing import Any, TextIO

from kerasprune.cli.errors import join_lines

__all__ = ["Console"]


class Console:
    """The output streams of one run, and how chatty it is.

    Parameters
    ----------
    quiet
        Only results and errors: no progress, notes or warnings.
    verbose
        Show more (Keras' per-epoch lines while fine-tuning).
    out, err
        The streams for results and for everything else (``sys.stdout`` and ``sys.stderr``
        when the console is made).
    """

    def __init__(self, quiet: bool = False, verbose: bool = False, out: TextIO | None = None,
                 err: TextIO | None = None) -> None:
        self.quiet = quiet
        self.verbose = verbose and not quiet
        self.out = out if out is not None else sys.stdout
        self.err = err if err is not None else sys.stderr

    @property
    def level(self) -> int:
        """The library's ``verbose`` argument: 0 (quiet), 1, or 2 (``-v``)."""
        return 0 if self.quiet else 2 if self.verbose else 1

    @property
    def progress(self) -> int:
        """``verbose`` for a Keras progress bar: 0 quiet, 1 a live bar on a terminal, 2 one
        line at the end elsewhere (a log file would get one line per update)."""
        if self.quiet:
            return 0
        isatty = getattr(self.err, "isatty", None)
        return 1 if isatty is not None and isatty() else 2

    def result(self, text: str) -> None:
        """Write ``text`` (and a newline) to the results stream."""
        self.out.write(text if text.endswith("\n") else text + "\n")
        self.out.flush()

    def note(self, text: str) -> None:
        """A note on stderr (what is being done, where a file went), unless quiet."""
        if not self.quiet:
            self.err.write(f"{text}\n")
            self.err.flush()

    def error(self, text: str) -> None:
        """One error line on stderr, always."""
        self.err.write(f"kerasprune: error: {text}\n")
        self.err.flush()

    def _warning(self, message: Warning | str, category: type[Warning], filename: str,
                 lineno: int, file: TextIO | None = None, line: str | None = None) -> None:
        if not self.quiet:
            self.err.write(f"kerasprune: warning: {join_lines(str(message))}\n")
            self.err.flush()

    @contextlib.contextmanager
    def working(self, debug: bool = False) -> Iterator[None]:
        """While a command works: ``print`` goes to stderr, warnings are one line each, and
        TensorFlow's Python logger (retracing notices as a trimming loop builds new models)
        shows only errors, unless ``debug``."""
        tf_logger = logging.getLogger("tensorflow")
        level = tf_logger.level
        if not debug:
            tf_logger.setLevel(logging.ERROR)
        try:
            with warnings.catch_warnings(), contextlib.redirect_stdout(self.err):
                warnings.showwarning = self._warning
                yield
        finally:
            tf_logger.setLevel(level)

    def bar(self, target: int | None, unit: str) -> Any:
        """A live Keras progress bar on a terminal's stderr, else ``None`` (quiet, or a log
        file, where a short task needs no line); call ``.update(step)``."""
        if self.progress != 1:
            return None
        import keras

        return keras.utils.Progbar(target, verbose=self.progress, unit_name=unit)
