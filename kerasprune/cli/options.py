"""Option groups that several subcommands share, and the types of their values."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from kerasprune.cli.data import parse_rescale

__all__ = ["add_compile_options", "add_data_options", "add_files", "add_json", "add_layers",
           "add_model", "add_output", "int_list", "neuron_list", "non_negative_int", "parse_int",
           "parse_share", "per_layer", "positive_int", "rescale", "share", "typed"]


def typed(name: str, parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """An argparse type whose ValueError message argparse shows after the option's name."""

    def convert(text: str) -> Any:
        try:
            return parse(text)
        except ValueError as err:
            raise argparse.ArgumentTypeError(str(err)) from None

    convert.__name__ = name
    return convert


def parse_int(text: str, low: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"expected an integer, got {text!r}") from None
    if value < low:
        raise ValueError(f"must be at least {low}, got {value}")
    return value


positive_int = typed("positive integer", lambda text: parse_int(text, 1))
non_negative_int = typed("integer >= 0", lambda text: parse_int(text, 0))


def _neurons(text: str) -> list[int]:
    parts = [p.strip() for p in text.split(",")]
    if not text.strip() or any(not p for p in parts):
        raise ValueError(f"expected comma-separated neuron indices such as 0,5,7, got {text!r}")
    try:
        return [int(p) for p in parts]
    except ValueError:
        raise ValueError(f"expected comma-separated integer indices such as 0,5,7, got "
                         f"{text!r}") from None


neuron_list = typed("neuron indices", _neurons)
rescale = typed("scale", parse_rescale)


def parse_share(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"expected a share such as 0.5, got {text!r}") from None
    if not 0 < value <= 1:
        raise ValueError(f"must be a share in (0, 1], got {text!r}")
    return value


share = typed("share", parse_share)


def _ints(text: str) -> list[int]:
    try:
        values = [parse_int(p.strip(), 1) for p in text.split(",")]
    except ValueError as err:
        raise ValueError(f"expected comma-separated positive integers such as 1,32: {err}"
                         ) from None
    return values


int_list = typed("integers", _ints)


def per_layer(parse: Callable[[str], Any], example: str) -> Callable[[str], tuple[str, Any]]:
    """An argparse type for ``VALUE`` (every layer) or ``LAYER=VALUE`` (one layer): gives
    ``("", value)`` or ``(layer, value)``."""

    def convert(text: str) -> tuple[str, Any]:
        layer, sep, value = text.rpartition("=")
        if sep and not layer:
            raise ValueError(f"expected VALUE or LAYER=VALUE such as {example}, got {text!r}")
        return layer, parse(value)

    return typed("VALUE or LAYER=VALUE", convert)


def add_compile_options(parser: argparse.ArgumentParser, why: str) -> None:
    """``--loss``, ``--optimizer``, ``--metrics``: compile settings for a model saved without
    them (or to replace them); ``why`` says what needs them."""
    comp = parser.add_argument_group(
        "compiling", f"{why}; a model saved without compile settings needs these, and these "
        "replace saved ones")
    comp.add_argument("--loss", default=None,
                      help="a Keras loss name, such as sparse_categorical_crossentropy")
    comp.add_argument("--optimizer", default=None, help="a Keras optimizer name "
                                                         "(default with --loss: adam)")
    comp.add_argument("--metrics", nargs="+", default=None, metavar="METRIC",
                      help="Keras metric names (default with --loss: accuracy)")


def add_model(parser: argparse.ArgumentParser) -> None:
    """The model file argument, and how to load custom layers."""
    parser.add_argument("model", metavar="MODEL.keras", help="a Keras 3 .keras model file")
    group = parser.add_argument_group("loading the model")
    group.add_argument("--custom-objects", action="append", default=[], metavar="MODULE",
                       help="import MODULE (a dotted module name, or a .py file) first: it "
                            "registers the model's custom layers with "
                            "@keras.saving.register_keras_serializable(); repeatable")
    group.add_argument("--unsafe", action="store_true",
                       help="let Keras run Python code stored in the file (Lambda layers); "
                            "only for files you trust")


def add_output(parser: argparse.ArgumentParser, *, required: bool, help: str) -> None:
    """``-o/--output`` and ``--force``."""
    parser.add_argument("-o", "--output", metavar="OUT.keras", required=required, help=help)
    parser.add_argument("--force", action="store_true",
                        help="overwrite existing output files (never the input)")


def add_files(parser: Any, output: tuple[str, str], plot: tuple[str, str]) -> None:
    """``-o FILE.json``, ``--plot FILE.png`` and ``--force``: ``(metavar, help)`` of each."""
    parser.add_argument("-o", "--output", metavar=output[0], help=output[1])
    parser.add_argument("--plot", metavar=plot[0], help=plot[1])
    parser.add_argument("--force", action="store_true",
                        help="overwrite existing output files (never the input)")


def add_json(parser: argparse.ArgumentParser) -> None:
    """``--json``: results as JSON on stdout."""
    parser.add_argument("--json", action="store_true",
                        help="print the results as JSON on stdout (instead of tables)")


def add_layers(parser: argparse.ArgumentParser, help: str) -> None:
    """``--layers``: layer names."""
    parser.add_argument("--layers", nargs="+", metavar="LAYER", default=None, help=help)


def add_data_options(parser: argparse.ArgumentParser) -> argparse._ArgumentGroup:
    """``--batch-size``, ``--limit``, ``--rescale``; returns the group for more options."""
    group = parser.add_argument_group(
        "data", "DATA is a .npz file with arrays x (inputs) and y (labels), a directory of "
        "images with one subdirectory per class, or mnist[:train|val|test] (the built-in "
        "MNIST)")
    group.add_argument("--batch-size", type=positive_int, default=32, metavar="N",
                       help="samples per batch (default: %(default)s)")
    group.add_argument("--limit", type=positive_int, default=None, metavar="N",
                       help="use only the first N samples of each data source")
    group.add_argument("--rescale", type=rescale, default=None, metavar="FACTOR",
                       help="multiply the inputs by FACTOR, such as 1/255 for 8-bit images "
                            "(unless the model has a Rescaling layer)")
    return group
