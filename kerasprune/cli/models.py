"""Reading and writing ``.keras`` model files for the command line.

A model file is checked before Keras sees it (exists, readable, a ``.keras`` zip archive
with a ``config.json``), custom layers are registered by importing the modules given with
``--custom-objects``, and any failure becomes one :class:`~kerasprune.cli.errors.CliError`
that names the file and says what to do.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import re
import sys
import warnings
import zipfile
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from kerasprune.cli.errors import CliError, one_line
from kerasprune.cli.io import atomic_write

__all__ = ["check_model_file", "compile_model", "describe", "import_modules", "load_model",
           "save_model"]

_LEGACY = {".h5": "a legacy HDF5 file", ".hdf5": "a legacy HDF5 file",
           ".pb": "a TensorFlow graph", ".tflite": "a TFLite model", ".onnx": "an ONNX model"}
_RESAVE = ("load it in Python with keras.saving.load_model (or the tool that made it) and "
           "save it with model.save('model.keras')")


def check_model_file(path: str | os.PathLike[str]) -> Path:
    """Check that ``path`` is a readable ``.keras`` file, without importing Keras.

    Returns
    -------
    pathlib.Path
        ``path``.

    Raises
    ------
    CliError
        If the file is missing, unreadable, a directory (a SavedModel), of another format,
        or not a valid ``.keras`` archive.
    """
    p = Path(path)
    if p.is_dir():
        kind = ("a TensorFlow SavedModel directory" if (p / "saved_model.pb").exists()
                else "a directory")
        raise CliError(f"{p} is {kind}, not a .keras file; kerasprune reads Keras 3 .keras "
                       f"files: {_RESAVE}")
    if not p.exists():
        raise CliError(f"{p}: no such file")
    suffix = p.suffix.lower()
    if suffix != ".keras":
        kind = _LEGACY.get(suffix, f"not a .keras file (its name ends in '{suffix}')"
                           if suffix else "not a .keras file (its name has no .keras ending)")
        if suffix in _LEGACY:
            kind = f"{kind}, not a .keras file"
        raise CliError(f"{p} is {kind}; kerasprune reads Keras 3 .keras files: {_RESAVE}")
    try:
        with open(p, "rb") as f:
            if not zipfile.is_zipfile(f):
                raise CliError(f"{p} is not a valid .keras file: it is not a zip archive "
                               "(truncated, or another format renamed)")
            with zipfile.ZipFile(f) as archive:
                names = set(archive.namelist())
    except OSError as err:
        raise CliError(f"cannot read {p}: {err.strerror or err}") from None
    except zipfile.BadZipFile as err:
        raise CliError(f"{p} is not a valid .keras file: {err}") from None
    if "config.json" not in names:
        raise CliError(f"{p} is not a valid .keras file: it has no config.json")
    return p


def import_modules(specs: Iterable[str]) -> None:
    """Import the ``--custom-objects`` modules, which register custom layers as they load.

    Parameters
    ----------
    specs
        Dotted module names (``mypkg.layers``, found from the current directory too, as
        ``python -m`` finds them) or paths of ``.py`` files.

    Raises
    ------
    CliError
        If a module cannot be found or fails while it is imported.
    """
    for spec in specs:
        try:
            if spec.endswith(".py") or os.sep in spec or "/" in spec:
                path = Path(spec)
                if not path.is_file():
                    raise CliError(f"--custom-objects {spec}: no such file")
                name = "kerasprune_custom_objects_" + re.sub(r"\W", "_", path.stem)
                module_spec = importlib.util.spec_from_file_location(name, path)
                if module_spec is None or module_spec.loader is None:
                    raise CliError(f"--custom-objects {spec}: cannot import it as a module")
                module = importlib.util.module_from_spec(module_spec)
                sys.modules[name] = module
                module_spec.loader.exec_module(module)
            else:
                if "" not in sys.path and os.getcwd() not in sys.path:
                    sys.path.insert(0, os.getcwd())
                importlib.import_module(spec)
        except CliError:
            raise
        except ImportError as err:
            raise CliError(f"--custom-objects {spec}: cannot import it: {one_line(err)}"
                           ) from err
        except Exception as err:
            raise CliError(f"--custom-objects {spec}: importing it failed: {one_line(err)}"
                           ) from err


def _registered_names(config: Any) -> Iterator[str]:
    """The registered names of the custom objects a model config uses."""
    if isinstance(config, dict):
        name, module = config.get("registered_name"), config.get("module")
        if (isinstance(name, str) and "class_name" in config
                and not (isinstance(module, str) and module.split(".")[0] == "keras")):
            yield name
        for value in config.values():
            yield from _registered_names(value)
    elif isinstance(config, list):
        for value in config:
            yield from _registered_names(value)


def _missing_custom_objects(path: Path) -> list[str]:
    import keras

    with zipfile.ZipFile(path) as archive:
        config = json.loads(archive.read("config.json"))
    names = dict.fromkeys(_registered_names(config))
    return [n for n in names if keras.saving.get_registered_object(n) is None]


def _custom_hint(path: Path, names: Sequence[str]) -> str:
    listed = ", ".join(f"'{n}'" for n in names)
    return (f"{path} uses custom object{'s' if len(names) > 1 else ''} {listed}, not "
            "registered in this process: pass --custom-objects MODULE, a module (or .py "
            "file) that defines them with @keras.saving.register_keras_serializable()")


def load_model(path: str | os.PathLike[str], custom_objects: Iterable[str] = (), *,
               unsafe: bool = False) -> Any:
    """Load a ``.keras`` model with its compile settings, or raise one clear error.

    Parameters
    ----------
    path
        The ``.keras`` file.
    custom_objects
        ``--custom-objects`` modules to import first (see :func:`import_modules`).
    unsafe
        Let Keras run Python code stored in the file (``Lambda`` layers).

    Returns
    -------
    keras.Model
        The model.

    Raises
    ------
    CliError
        For a bad file, a missing custom object, Python code without ``unsafe``, or any
        other failure to load.
    """
    p = check_model_file(path)
    import_modules(custom_objects)
    import keras

    try:
        missing = _missing_custom_objects(p)
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as err:
        raise CliError(f"{p} is not a valid .keras file: config.json cannot be read "
                       f"({one_line(err)})") from err
    if missing:
        raise CliError(_custom_hint(p, missing))
    try:
        with warnings.catch_warnings():
            # Noise here: metrics are built when first used, and no command reuses the
            # saved optimizer's state (pruned models get a fresh optimizer).
            warnings.filterwarnings("ignore", message=".*compiled metrics have yet to be built")
            warnings.filterwarnings("ignore", message="Skipping variable loading for optimizer")
            model = keras.saving.load_model(p, safe_mode=not unsafe)
    except Exception as err:
        raise CliError(_load_error(p, err)) from err
    if not isinstance(model, keras.Model):
        raise CliError(f"{p} holds a {type(model).__name__}, not a model")
    return model


def _load_error(path: Path, err: Exception) -> str:
    text = str(err)
    context = err.__context__
    found = re.search(r"Could not locate (?:class|function) '([^']+)'",
                      f"{text} {context or ''}")
    if found:
        return _custom_hint(path, [found.group(1)])
    if "safe_mode" in text or "unsafe_deserialization" in text:
        return (f"{path} holds Python code (a Lambda layer's function), which Keras does not "
                "load from a file by default; pass --unsafe if you trust the file")
    first = text.split("\n\n", 1)[0]
    return f"Keras cannot load {path}: {one_line(type(err)(first))}"


def save_model(model: Any, path: str | os.PathLike[str]) -> Path:
    """Save ``model`` as ``.keras`` atomically (see :func:`kerasprune.cli.io.atomic_write`)."""
    return atomic_write(path, model.save)


def describe(model: Any) -> dict[str, Any]:
    """Name, class, inputs and outputs of a model, for headers and JSON."""
    return {"name": model.name, "class": type(model).__name__,
            "inputs": [list(t.shape[1:]) for t in model.inputs],
            "outputs": [list(t.shape[1:]) for t in model.outputs]}


def compile_model(model: Any, args: Any, path: str, why: str) -> None:
    """Compile ``model`` from ``--loss/--optimizer/--metrics`` if given; else check that it
    was saved with compile settings.

    Parameters
    ----------
    model
        The loaded model.
    args
        The parsed options (``loss``, ``optimizer``, ``metrics``).
    path
        The model file, for messages.
    why
        What needs the settings, for the message (``"trim fine-tunes and evaluates it"``).

    Raises
    ------
    CliError
        If ``--optimizer`` or ``--metrics`` come without ``--loss``, or the model has no
        compile settings and no ``--loss`` is given.
    """
    if args.loss is not None:
        model.compile(optimizer=args.optimizer or "adam", loss=args.loss,
                      metrics=args.metrics or ["accuracy"])
    elif args.optimizer is not None or args.metrics is not None:
        raise CliError("--optimizer and --metrics compile the model anew, which needs --loss "
                       "too")
    elif not (getattr(model, "compiled", False) and model.get_compile_config()):
        raise CliError(f"{path} was saved without compile settings, and {why}: pass --loss "
                       "(and --optimizer, --metrics), or save it compiled")
