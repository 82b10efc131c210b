"""``kerasprune``: the command line (``python -m kerasprune`` or the console script).

Every failure is one line on stderr (``kerasprune: error: ...``) and a non-zero exit code:
1 for errors while working, 2 for a command line that cannot be parsed, 130 after Ctrl-C.
``--debug`` adds the traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
import textwrap
import traceback
from collections.abc import Sequence
from typing import NoReturn

from kerasprune import __version__
from kerasprune.cli.commands import COMMANDS
from kerasprune.cli.console import Console
from kerasprune.cli.errors import EXIT_ERROR, EXIT_INTERRUPTED, CliError, one_line

__all__ = ["build_parser", "main", "run"]

_BACKENDS = ("tensorflow", "jax", "torch")


class _Formatter(argparse.HelpFormatter):
    """Wraps paragraphs of descriptions; keeps indented lines (examples) as written."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        paragraphs = []
        for paragraph in text.split("\n\n"):
            if "\n  " in paragraph:
                paragraphs.append(textwrap.indent(paragraph, indent))
            else:
                paragraphs.append(textwrap.fill(" ".join(paragraph.split()), width,
                                                initial_indent=indent,
                                                subsequent_indent=indent))
        return "\n\n".join(paragraphs)


def _common() -> argparse.ArgumentParser:
    """Options every subcommand takes, before or after its name."""
    common = argparse.ArgumentParser(add_help=False)
    group = common.add_argument_group("output")
    # SUPPRESS: an option given before the subcommand is not reset by the subcommand's default
    group.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS,
                       help="no progress bars, notes or warnings: only results and errors")
    group.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                       help="more detail (Keras' per-epoch lines while fine-tuning)")
    group.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                       help="show the traceback of an error, and TensorFlow's own logs")
    group.add_argument("--backend", choices=_BACKENDS, default=argparse.SUPPRESS,
                       help="the Keras backend (default: $KERAS_BACKEND, else Keras' own)")
    return common


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``kerasprune`` and its subcommands."""
    common = _common()
    parser = argparse.ArgumentParser(
        prog="kerasprune", parents=[common],
        description="Structured pruning of saved Keras 3 models: see what can be pruned, "
                    "score neurons by any criterion, measure each layer's sensitivity, "
                    "delete neurons or prune to a target, run Network Trimming.",
        epilog="Run 'kerasprune COMMAND --help' for a command's options.")
    parser.add_argument("--version", action="version", version=f"kerasprune {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command in COMMANDS.values():
        p = sub.add_parser(command.name, parents=[common], help=command.help,
                           description=command.description, epilog=command.epilog or None,
                           formatter_class=_Formatter)
        command.add_arguments(p)
    return parser


def _set_backend(backend: str | None) -> None:
    if backend is None:
        return
    keras = sys.modules.get("keras")
    if keras is not None and keras.backend.backend() != backend:
        raise CliError(f"--backend {backend}: Keras is already loaded with the "
                       f"{keras.backend.backend()} backend in this process")
    os.environ["KERAS_BACKEND"] = backend


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``kerasprune`` with ``argv`` (default: ``sys.argv[1:]``); return the exit code.

    Parameters
    ----------
    argv
        The arguments after the program name.

    Returns
    -------
    int
        0 on success, 1 on an error, 2 for a command line that cannot be parsed (argparse
        exits by itself then), 130 after an interrupt.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.argv = argv
    quiet, debug = getattr(args, "quiet", False), getattr(args, "debug", False)
    console = Console(quiet=quiet, verbose=getattr(args, "verbose", False))
    command = COMMANDS[args.command]
    try:
        _set_backend(getattr(args, "backend", None))
        command.check(args)
        with console.working(debug):
            command.run(args, console)
    except KeyboardInterrupt:
        console.error("interrupted")
        return EXIT_INTERRUPTED
    except Exception as err:
        if debug:
            traceback.print_exc(file=console.err)
        console.error(one_line(err))
        return err.code if isinstance(err, CliError) else EXIT_ERROR
    return 0


def _silence_native_logs() -> None:
    """Send what native code writes to file descriptor 2 (TensorFlow's C++ logs, which no
    setting fully silences) to the null device, and Python's ``sys.stderr`` to a copy of
    the real one: errors, warnings and progress still show, the C++ noise does not."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, 2)
        os.close(null)
        sys.stderr = open(saved, "w", buffering=1, encoding=sys.stderr.encoding or "utf-8",  # noqa: SIM115
                          errors="backslashreplace", closefd=True)
    except (OSError, ValueError, AttributeError):  # no real stderr (an embedded interpreter)
        return


def run() -> NoReturn:
    """The console script and ``python -m kerasprune``: :func:`main` on ``sys.argv``, with
    native logs silenced unless ``--debug`` is given."""
    argv = sys.argv[1:]
    if "--debug" not in argv:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        _silence_native_logs()
    sys.exit(main(argv))
