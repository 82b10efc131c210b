"""The command line's errors, and how any error becomes one line on stderr."""

from __future__ import annotations

__all__ = ["EXIT_ERROR", "EXIT_INTERRUPTED", "EXIT_USAGE", "CliError", "join_lines",
           "one_line"]

EXIT_ERROR = 1
"""Exit code of a run that failed: bad input, a refused deletion, a failed write..."""
EXIT_USAGE = 2
"""Exit code of a command line that cannot be parsed (argparse's own)."""
EXIT_INTERRUPTED = 130
"""Exit code after Ctrl-C (128 + SIGINT), as shells report it."""

_MOST = 600
"""Longest message printed; the rest is shown with ``--debug``."""


class CliError(Exception):
    """An error the command line reports as one line: what went wrong, where, what to do.

    Parameters
    ----------
    message
        The whole message, without the ``kerasprune: error:`` prefix.
    code
        The process exit code.
    """

    def __init__(self, message: str, code: int = EXIT_ERROR) -> None:
        super().__init__(message)
        self.code = code


# Exceptions whose message is written for the user (the library's documented errors, file
# errors): shown as they are. Any other exception is shown with its type name, since it is
# most likely a bug, and --debug prints its traceback.
_EXPECTED = ("CliError", "PruneError", "UnsupportedLayerError", "DatasetError",
             "DatasetDownloadError", "DatasetIntegrityError", "ValueError", "TypeError",
             "OSError", "FileNotFoundError", "PermissionError", "IsADirectoryError")


_OPTIONS = {"allow_output_change=True": "--allow-output-change", "pass `layers`": "pass --layers",
            "name the layers to measure": "pass --layers",
            "Loosen min_width, max_fraction, protect or round_to, or aim higher":
            "Loosen --min-width, --max-fraction, --protect, --round-to or a --limits file, "
            "aim higher, or pass --best-effort",
            "protect names '": "--protect names '"}
"""The library's keyword arguments that messages suggest, and the options that set them."""


def join_lines(text: str) -> str:
    """A multi-line message (a list of reasons) as one line, joined with ``; ``."""
    parts = [line.strip().removeprefix("- ") for line in text.splitlines()]
    joined = "; ".join(p for p in parts if p).replace(":;", ":")
    for keyword, option in _OPTIONS.items():
        joined = joined.replace(keyword, option)
    return joined


def one_line(exc: BaseException) -> str:
    """``exc`` as one line: a multi-line message is joined with ``; ``, a long one cut.

    Parameters
    ----------
    exc
        Any exception.

    Returns
    -------
    str
        The message, without a prefix; unexpected exception types are named in it.
    """
    text = join_lines(str(exc))
    if not text:
        text = type(exc).__name__
    elif not any(cls.__name__ in _EXPECTED for cls in type(exc).__mro__):
        text = f"{type(exc).__name__}: {text}"
    if len(text) > _MOST:
        text = text[:_MOST].rstrip() + "... (--debug shows the whole message)"
    return text
