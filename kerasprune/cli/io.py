"""Files the command line writes: checked before any work, written atomically.

Every file is written to a temporary file in its target's directory, flushed to disk, and
renamed over the target (``os.replace``, atomic on POSIX and Windows): a crash or a kill at
any moment leaves the old file or no file, never half of one. Outputs are checked before
the work starts: an existing file is overwritten only with ``--force``, and never one of the
command's inputs.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from kerasprune.cli.errors import CliError

__all__ = ["atomic_write", "check_output", "check_report_dir", "dumps", "read_document",
           "read_json", "write_json", "write_text"]

_TMP_PREFIX = ".kerasprune-tmp-"
"""Temporary files are hidden and named after this prefix and their target."""


def _same(a: Path, b: Path) -> bool:
    try:
        return a.samefile(b)
    except OSError:
        return a.resolve() == b.resolve()


def check_output(path: str | os.PathLike[str], *, force: bool,
                 inputs: Iterable[str | os.PathLike[str]] = (), suffixes: Iterable[str] = (),
                 what: str = "output") -> Path:
    """Check that ``path`` may be written, before any work is done.

    Parameters
    ----------
    path
        The file to write.
    force
        Whether an existing file may be replaced.
    inputs
        The command's input files: never overwritten, even with ``force``.
    suffixes
        Accepted file name endings (``.keras``), if only some are.
    what
        How the message names the file (``"-o"``, ``"--plot"``).

    Returns
    -------
    pathlib.Path
        ``path``.

    Raises
    ------
    CliError
        If the suffix is wrong, the directory does not exist or cannot be written, the path
        is an input or a directory, or the file exists and ``force`` is false.
    """
    target = Path(path)
    suffixes = tuple(suffixes)
    if suffixes and target.suffix.lower() not in suffixes:
        raise CliError(f"{what} {target}: the file name must end in "
                       f"{' or '.join(suffixes)}")
    for source in inputs:
        if _same(target, Path(source)):
            raise CliError(f"{what} {target} is an input of this command: kerasprune never "
                           "overwrites its input; choose another file")
    parent = target.parent
    if not parent.is_dir():
        raise CliError(f"{what} {target}: directory {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise CliError(f"{what} {target}: directory {parent} is not writable")
    if target.is_dir():
        raise CliError(f"{what} {target} is a directory; give a file name")
    if target.exists() and not force:
        raise CliError(f"{what} {target} exists; pass --force to overwrite it")
    return target


def check_report_dir(path: str | os.PathLike[str], names: Iterable[str], *, force: bool,
                     inputs: Iterable[str | os.PathLike[str]] = ()) -> Path:
    """Check that the files ``names`` may be written in directory ``path`` (made if needed).

    Raises
    ------
    CliError
        If ``path`` is a file, cannot be made or written, or one of the files exists and
        ``force`` is false.
    """
    directory = Path(path)
    if directory.exists() and not directory.is_dir():
        raise CliError(f"--report {directory} is a file; give a directory")
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise CliError(f"--report {directory}: cannot make the directory: "
                       f"{err.strerror or err}") from None
    inputs = list(inputs)
    for name in names:
        check_output(directory / name, force=force, inputs=inputs, what="--report")
    return directory


def _commit(tmp: str, target: Path) -> None:
    """Rename the finished temporary file over the target, and make the rename durable."""
    os.replace(tmp, target)
    with contextlib.suppress(OSError):  # not every platform can open a directory
        fd = os.open(target.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _mode(target: Path) -> int:
    """Permissions for the new file: the old file's, else the usual ones under the umask."""
    with contextlib.suppress(OSError):
        return target.stat().st_mode & 0o7777
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def atomic_write(path: str | os.PathLike[str], write: Callable[[str], Any]) -> Path:
    """Write a file atomically: ``write(tmp)`` fills a temporary file, which then replaces
    ``path`` in one rename.

    Parameters
    ----------
    path
        The file to write (its directory must exist).
    write
        Called with the temporary file's path (same directory and file name ending as
        ``path``, so writers that check the suffix, as Keras does, accept it); it must write
        the whole content there.

    Returns
    -------
    pathlib.Path
        ``path``.

    Raises
    ------
    OSError
        If writing fails; the temporary file is removed and ``path`` is untouched.
    """
    target = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f"{_TMP_PREFIX}{target.name}.", suffix=target.suffix,
                               dir=target.parent)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, _mode(target))
        _commit(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return target


def write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` (UTF-8) atomically."""
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def dumps(data: Any, indent: int = 1, _depth: int = 0) -> str:
    """JSON, indented, with lists of numbers or strings on one line (per-neuron values).

    Parameters
    ----------
    data
        JSON-serializable data.
    indent
        Spaces per level.

    Returns
    -------
    str
        The JSON text.
    """
    pad, inner = " " * indent * _depth, " " * indent * (_depth + 1)
    if isinstance(data, dict) and data:
        items = [f"{inner}{json.dumps(str(k))}: {dumps(v, indent, _depth + 1)}"
                 for k, v in data.items()]
        return "{\n" + ",\n".join(items) + f"\n{pad}}}"
    if isinstance(data, (list, tuple)) and data and any(
            isinstance(v, (dict, list, tuple)) for v in data):
        items = [f"{inner}{dumps(v, indent, _depth + 1)}" for v in data]
        return "[\n" + ",\n".join(items) + f"\n{pad}]"
    return json.dumps(data, allow_nan=False)


def write_json(path: str | os.PathLike[str], data: Any) -> Path:
    """Write ``data`` as JSON (see :func:`dumps`) atomically."""
    return write_text(path, dumps(data) + "\n")


def read_json(path: str | os.PathLike[str], where: str) -> Any:
    """The JSON data in ``path``.

    Parameters
    ----------
    path
        The file.
    where
        The option and file, for messages (``"--from apoz.json"``).

    Raises
    ------
    CliError
        If the file is missing, unreadable or not JSON.
    """
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CliError(f"{where}: no such file") from None
    except OSError as err:
        raise CliError(f"{where}: cannot read it: {err.strerror or err}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CliError(f"{where}: not a JSON file ({err})") from None


def read_document(path: str | os.PathLike[str], where: str, fmt: str, version: int,
                  what: str, how: str) -> dict[str, Any]:
    """A JSON file that kerasprune wrote: ``{"format": fmt, "version": version, ...}``.

    Parameters
    ----------
    path
        The file.
    where
        The option and file, for messages.
    fmt, version
        The format's name and the version this kerasprune reads.
    what
        The kind of file, for messages (``"an APoZ file"``).
    how
        The command that writes one, for messages.

    Raises
    ------
    CliError
        If the file is missing, unreadable, not JSON, of another format or version.
    """
    doc = read_json(path, where)
    if not isinstance(doc, dict) or doc.get("format") != fmt:
        raise CliError(f"{where}: not {what} (write one with {how})")
    if doc.get("version") != version:
        raise CliError(f"{where}: {what.split(' ', 1)[1]} version {doc.get('version')!r}; "
                       f"this kerasprune reads version {version}")
    return doc
