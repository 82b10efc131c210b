"""Fine-tuning and evaluating pruned models: the steps :func:`kerasprune.trim` and
:func:`kerasprune.prune` share.

Every pruned model is compiled with a fresh copy of the user's compile settings (a new
optimizer, new loss and metric objects: nothing is shared with the user's model or with an
earlier round), optionally with another learning rate; trained with ``model.fit`` on a checked
data source; and evaluated with ``model.evaluate``. The tracked metric and whether higher or
lower is better come from Keras' own metric objects (:mod:`.metrics`).

A model built under a ``tf.distribute`` strategy or a Keras distribution (see
:mod:`.placement`) is compiled, trained and evaluated under it: its optimizer's variables are
mirrored or laid out as its own, and its batches split between the devices.
"""

from __future__ import annotations

import copy
import difflib
import inspect
from collections.abc import Mapping, Sequence
from typing import Any

import keras

from kerasprune.adapters.keras import data as keras_data
from kerasprune.adapters.keras import metrics as keras_metrics
from kerasprune.adapters.keras import placement

__all__ = ["check_fit_kwargs", "compile_config", "compile_fresh", "evaluate", "fit",
           "pick_metric", "probe"]


def compile_config(model: keras.Model, learning_rate: Any, who: str = "trim") -> dict[str, Any]:
    """A copy of ``model``'s compile settings, with ``learning_rate`` (a number or a
    schedule) put into the optimizer's config if given.

    Raises
    ------
    ValueError
        If the model is not compiled; ``who`` is the function that needs it, for the message.
    """
    config = model.get_compile_config() if getattr(model, "compiled", False) else {}
    if not config:
        raise ValueError(
            f"model '{model.name}' is not compiled: {who} fine-tunes and evaluates it with its "
            "compile settings; call model.compile(optimizer=..., loss=..., "
            "metrics=['accuracy']) first")
    config = copy.deepcopy(config)
    if learning_rate is not None:
        optimizer = keras.optimizers.get(copy.deepcopy(config["optimizer"]))
        settings = optimizer.get_config()
        settings["learning_rate"] = copy.deepcopy(learning_rate)
        config["optimizer"] = keras.optimizers.serialize(type(optimizer).from_config(settings))
    return config


def compile_fresh(model: keras.Model, config: Mapping[str, Any]) -> None:
    """Compile with a fresh copy of ``config`` (new optimizer, loss and metric objects), under
    the model's strategy or distribution."""
    with placement.of(model).scope():
        model.compile_from_config(copy.deepcopy(dict(config)))


def pick_metric(metric: str | None, mode: str, results: Mapping[str, float],
                model: keras.Model) -> tuple[str, str]:
    """The tracked metric's name and direction (``"max"``/``"min"``).

    Parameters
    ----------
    metric
        A name among ``results``' keys, or ``None`` for ``"accuracy"`` (or the first metric
        whose name ends in ``accuracy``/``acc``).
    mode
        ``"auto"`` (ask Keras), ``"max"`` or ``"min"``.
    results
        What ``model.evaluate(..., return_dict=True)`` returned.
    model
        The compiled model (its metric objects say the direction).

    Raises
    ------
    ValueError
        No such metric (with a close match), no accuracy to default to, a direction Keras
        cannot tell with ``mode="auto"``, or a ``mode`` that contradicts Keras.
    """
    if metric is None:
        found = ["accuracy"] if "accuracy" in results else [
            k for k in results if k.endswith(("accuracy", "acc"))]
        if not found:
            raise ValueError(
                f"no accuracy metric among what model.evaluate returns ({sorted(results)}): "
                "name the metric to keep as `metric` (e.g. metric='mae'; whether higher or "
                "lower is better comes from Keras, or from mode='max'/'min')")
        metric = found[0]
    elif metric not in results:
        match = difflib.get_close_matches(metric, list(results), n=1)
        raise ValueError(f"metric {metric!r} is not among what model.evaluate returns: "
                         f"{sorted(results)}"
                         + (f" (did you mean {match[0]!r}?)" if match else "")
                         + "; compile the model with it")
    known = keras_metrics.direction(model, metric)
    if mode == "auto":
        if known is None:
            raise ValueError(
                f"cannot tell whether a higher or a lower {metric!r} is better (Keras does "
                "not say for this metric): pass mode='max' if higher is better, mode='min' "
                "if lower is")
        return metric, known
    if known is not None and known != mode:
        better = "higher" if known == "max" else "lower"
        raise ValueError(f"mode={mode!r} contradicts {metric!r}, for which {better} is better: "
                         f"pass mode='auto' (or mode={known!r})")
    return metric, mode


OWNED = {
    "x": "train_data", "y": "train_data", "sample_weight": "train_data as (x, y, weights)",
    "batch_size": "batch_size", "epochs": "epochs", "steps_per_epoch": "steps_per_epoch",
    "verbose": "verbose", "initial_epoch": "",
}
"""``model.fit`` arguments that the workflows set themselves, and the argument to use
instead."""


def check_fit_kwargs(fit_kwargs: Mapping[str, Any] | None, train: keras_data.Source | None,
                     who: str = "trim") -> dict[str, Any]:
    """``fit_kwargs`` checked: only ``model.fit`` arguments, none that ``who`` sets itself.

    Raises
    ------
    TypeError, ValueError
        Naming the key: not a ``model.fit`` argument (with a close match), one that ``who``
        sets, callbacks that are not Keras callbacks, ``validation_split`` without arrays.
    """
    if fit_kwargs is None:
        return {}
    if not isinstance(fit_kwargs, Mapping):
        raise TypeError(f"fit_kwargs must be a dict of model.fit arguments, got "
                        f"{type(fit_kwargs).__name__}")
    accepted = set(inspect.signature(keras.Model.fit).parameters) - {"self"}
    for key in fit_kwargs:
        if key in OWNED:
            instead = OWNED[key]
            raise ValueError(
                f"fit_kwargs[{key!r}]: {who} sets {key} itself (so that the history says "
                "what ran)" + (f"; pass {instead} to {who} instead" if instead else
                               "; each round's epochs are numbered from 0"))
        if key not in accepted:
            match = difflib.get_close_matches(str(key), sorted(accepted), n=1)
            raise TypeError(f"fit_kwargs[{key!r}] is not an argument of model.fit"
                            + (f" (did you mean {match[0]!r}?)" if match else ""))
    callbacks = fit_kwargs.get("callbacks")
    if callbacks is not None and not (
            isinstance(callbacks, (list, tuple))
            and all(isinstance(c, keras.callbacks.Callback) for c in callbacks)):
        raise TypeError("fit_kwargs['callbacks'] must be a list of keras.callbacks.Callback")
    if fit_kwargs.get("validation_split") and (train is None
                                               or train.kind != keras_data.ARRAYS):
        kind = "missing" if train is None else f"a {train.kind}"
        raise ValueError(f"fit_kwargs['validation_split'] needs train_data as arrays (x, y); "
                         f"it is {kind}: pass validation_data instead")
    return dict(fit_kwargs)


def probe(model: keras.Model, train: keras_data.Source) -> dict[str, float]:
    """Evaluate ``model`` on the first batch of ``train``: labels that do not fit the loss or
    the metrics are found before any work, and the metrics' names (and so the tracked
    metric's direction) are known before the first full pass.

    Raises
    ------
    ValueError
        Naming ``train.name``, if the evaluation fails.
    """
    x, y, w = train.first_batch()
    rows = keras_data.batch_rows(x)
    try:  # evaluate (not test_on_batch): its data adapter converts arrays on every backend
        with placement.of(model).scope():
            out = model.evaluate(x, y, sample_weight=w, batch_size=rows, verbose=0,
                                 return_dict=True)
    except Exception as err:
        raise ValueError(f"{train.name} does not fit the model: evaluating its first batch "
                         f"failed: {type(err).__name__}: {err}") from err
    return {str(k): float(v) for k, v in out.items()}


def fit(model: keras.Model, train: keras_data.Source, fit_kwargs: Mapping[str, Any], *,
        initial_epoch: int, epochs: int, steps_per_epoch: int | None, verbose: int,
        callbacks: Sequence[keras.callbacks.Callback] = ()) -> None:
    """``epochs`` epochs of ``model.fit`` on ``train``, numbered from ``initial_epoch``;
    ``fit_kwargs``' callbacks run before ``callbacks``."""
    kwargs: dict[str, Any] = {
        **train.keras_args(), **fit_kwargs, "epochs": initial_epoch + epochs,
        "initial_epoch": initial_epoch, "steps_per_epoch": steps_per_epoch,
        "verbose": 2 if verbose >= 2 else 0,
        "callbacks": [*fit_kwargs.get("callbacks", ()), *callbacks]}
    with placement.of(model).scope():
        model.fit(**kwargs)


def evaluate(model: keras.Model, val: keras_data.Source, steps: int | None,
             callbacks: Sequence[keras.callbacks.Callback] = ()) -> dict[str, float]:
    """``model.evaluate`` on ``val`` (at most ``steps`` batches): every metric, as floats."""
    with placement.of(model).scope():
        result = model.evaluate(**val.keras_args(), steps=steps, verbose=0, return_dict=True,
                                callbacks=list(callbacks))
    return {str(k): float(v) for k, v in result.items()}
