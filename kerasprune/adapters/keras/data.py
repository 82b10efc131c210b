"""The data :func:`kerasprune.get_apoz` and :func:`kerasprune.trim` read, checked before any work.

One reader serves every argument that holds data (``get_apoz``'s ``data``; ``trim``'s
``train_data``, ``val_data`` and ``apoz_data``). :func:`read` finds out what kind of source a
value is and checks, without running the model, that it fits: its structure (one array, a
list or a dict of inputs, a tuple ``(x, y[, sample_weight])``), every input's shape against
the model's input (batch axis aside, ``None`` matching any size), dict keys against the
model's input names, labels where they are needed, a finite length or a number of steps, and
that a source read more than once can be read again. A problem is one ``ValueError`` or
``TypeError`` that names the argument and says what to pass instead.

Sources whose batches cannot be seen in advance (generators, lists of batches) are checked
again batch by batch as they are read, so a bad batch is named by its position.
"""

from __future__ import annotations

import difflib
import hashlib
import itertools
import sys
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np

__all__ = ["ARRAYS", "BATCHES", "DATASET", "ITERATOR", "PYDATASET", "ModelInputs", "Source",
           "batch_rows", "map_arrays", "model_input", "pad_batch", "read"]

ARRAYS = "arrays"
"""In-memory arrays: ``x``, or ``(x, y[, sample_weight])``, split into batches here."""
DATASET = "tf.data.Dataset"
PYDATASET = "keras.utils.PyDataset"
BATCHES = "iterable of batches"
"""A re-iterable sequence of batches (a list of arrays or of ``(x, y)`` tuples...)."""
ITERATOR = "iterator"
"""A one-shot iterator or generator of batches: it can be read once."""

_KINDS_WITH_LABELS = ("a tuple of arrays (x, y) or (x, y, sample_weight), or a "
                      "tf.data.Dataset, keras.utils.PyDataset or torch DataLoader yielding "
                      "(x, y) batches")
_KINDS_INPUTS = ("NumPy arrays (x, a list or dict of them for several inputs, or a tuple "
                 "(x, y)), a tf.data.Dataset, a keras.utils.PyDataset, or an iterable of "
                 "batches")


# --------------------------------------------------------------------------------------------
# What the model takes
# --------------------------------------------------------------------------------------------


def model_input(model: keras.Model) -> Any:
    """The model's input structure, as ``keras.Model(inputs, ...)`` takes it."""
    if isinstance(model, keras.Sequential):
        return model.inputs[0]
    try:
        return model.input
    except (AttributeError, ValueError):
        return model.inputs


@dataclass(frozen=True)
class ModelInputs:
    """What a model takes: each input's name, shape (batch axis left out) and dtype.

    ``keys`` are the dict keys when the model was built with a dict of inputs (in the order
    of ``names``), else ``None``.
    """

    names: tuple[str, ...]
    shapes: tuple[tuple[int | None, ...], ...]
    dtypes: tuple[str, ...]
    keys: tuple[str, ...] | None

    @classmethod
    def of(cls, model: keras.Model) -> ModelInputs:
        """The inputs of a built model."""
        tensors = list(model.inputs)
        keys: tuple[str, ...] | None = None
        structure = model_input(model)
        if isinstance(structure, Mapping):
            by_id = {id(t): k for k, t in structure.items()}
            keys = tuple(str(by_id.get(id(t), getattr(t, "name", i)))
                         for i, t in enumerate(tensors))
        return cls(
            tuple(str(getattr(t, "name", f"input_{i}")) for i, t in enumerate(tensors)),
            tuple(tuple(None if d is None else int(d) for d in t.shape[1:]) for t in tensors),
            tuple(str(t.dtype) for t in tensors),
            keys)

    def __len__(self) -> int:
        return len(self.names)

    def label(self, i: int) -> str:
        """How errors name input ``i``: ``the input`` for a one-input model."""
        if len(self) == 1 and self.keys is None:
            return "the input"
        return f"input {(self.keys or self.names)[i]!r}"

    def structure(self, leaves: Sequence[Any]) -> Any:
        """``leaves`` (one per input, in order) in the structure the model takes."""
        if self.keys is not None:
            return dict(zip(self.keys, leaves, strict=True))
        return leaves[0] if len(self) == 1 else list(leaves)


def _shape_text(shape: Sequence[int | None]) -> str:
    return "(" + ", ".join("None" if d is None else str(d) for d in shape) + (
        ",)" if len(shape) == 1 else ")")


# --------------------------------------------------------------------------------------------
# Arrays and structures
# --------------------------------------------------------------------------------------------


def is_array(value: Any) -> bool:
    """A NumPy array or a backend tensor (anything with a shape, a dtype and indexing)."""
    return isinstance(value, np.ndarray) or (
        hasattr(value, "shape") and hasattr(value, "dtype") and hasattr(value, "__getitem__")
        and not isinstance(value, (str, bytes)))


def map_arrays(fn: Callable[[Any], Any], x: Any) -> Any:
    """Apply ``fn`` to every array of a (nested) list, tuple or dict of arrays."""
    if isinstance(x, Mapping):
        return {k: map_arrays(fn, v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return type(x)(map_arrays(fn, v) for v in x)
    return fn(x)


def leaves(x: Any) -> list[Any]:
    """The arrays of a (nested) list, tuple or dict of arrays."""
    out: list[Any] = []
    map_arrays(out.append, x)
    return out


def _numbers(value: Any) -> bool:
    """A (nested) Python list or tuple of numbers: what ``np.asarray`` would make an array."""
    if not isinstance(value, (list, tuple)):
        return False
    while isinstance(value, (list, tuple)) and value:
        value = value[0]
    return isinstance(value, (int, float, np.number)) and not isinstance(value, bool)


def _is_tf_dataset(data: Any) -> bool:
    tf = sys.modules.get("tensorflow")
    return tf is not None and isinstance(data, tf.data.Dataset)


def _one_shot(data: Any) -> bool:
    """An iterator (a generator...): iterating it again gives what is left, not a new pass."""
    try:
        return iter(data) is data
    except TypeError:
        return False


def _type_name(value: Any) -> str:
    return type(value).__name__


# --------------------------------------------------------------------------------------------
# Checks of inputs against the model
# --------------------------------------------------------------------------------------------


def _closest(key: str, options: Iterable[str]) -> str:
    match = difflib.get_close_matches(key, list(options), n=1)
    return f" (did you mean {match[0]!r}?)" if match else ""


def _flat_inputs(x: Any, spec: ModelInputs, where: str) -> list[Any]:
    """The input arrays of ``x`` in the model's input order, its structure checked."""
    n = len(spec)
    if isinstance(x, Mapping):
        options = [spec.keys] if spec.keys is not None else []
        options.append(spec.names)
        for keys in options:
            if all(k in x for k in keys):
                extra = [k for k in x if k not in keys]
                if extra:
                    warnings.warn(f"{where}: the model has no input named "
                                  f"{', '.join(map(repr, extra))}; these arrays are not read",
                                  UserWarning, stacklevel=4)
                return [x[k] for k in keys]
        keys = options[0]
        missing = [k for k in keys if k not in x]
        unknown = [str(k) for k in x if k not in keys]
        hint = "".join(_closest(str(k), keys) for k in unknown[:1])
        raise ValueError(
            f"{where}: the inputs are a dict with keys {sorted(map(str, x))}, but the model's "
            f"inputs are {list(keys)}: missing {', '.join(map(repr, missing))}"
            + (f", unknown {', '.join(map(repr, unknown))}{hint}" if unknown else "")
            + "; key the arrays by the model's input names")
    if isinstance(x, (list, tuple)):
        if _numbers(x):
            raise TypeError(f"{where}: the input is a Python {_type_name(x)} of numbers: pass "
                            "it as a NumPy array (np.asarray(...))")
        if len(x) != n:
            model = ("a model with one input" if n == 1 else
                     f"a model with {n} inputs {list(spec.keys or spec.names)}")
            raise ValueError(
                f"{where}: {len(x)} input arrays for {model}"
                + ("; a list is read as the model's inputs: pass (x, y) as a tuple"
                   if n == 1 and len(x) in (2, 3) else ""))
        return list(x)
    if n != 1:
        raise ValueError(f"{where}: one array for a model with {n} inputs "
                         f"{list(spec.keys or spec.names)}: pass a list or a dict of {n} "
                         "arrays")
    return [x]


def _require_array(value: Any, where: str, what: str) -> None:
    """Raise unless ``value`` is an array (``what``: how the message names it)."""
    if value is None:
        raise ValueError(f"{where}: {what} is None")
    if not is_array(value):
        if _numbers(value):
            raise TypeError(f"{where}: {what} is a Python {_type_name(value)} of numbers: "
                            "pass it as a NumPy array (np.asarray(...))")
        raise TypeError(f"{where}: {what} is a {_type_name(value)}, not an array")


def _fits(shape: Sequence[Any], expected: Sequence[int | None]) -> bool:
    """Whether ``shape`` matches ``expected`` (``None`` on either side matches any size)."""
    return len(shape) == len(expected) and all(
        e is None or g is None or int(g) == e for g, e in zip(shape, expected, strict=True))


def _check_array(value: Any, i: int, spec: ModelInputs, where: str, batched: bool) -> None:
    """Check one input array (a whole array, or one batch) against model input ``i``."""
    what = spec.label(i)
    _require_array(value, where, what)
    kind = np.dtype(value.dtype).kind if isinstance(value, np.ndarray) else None
    if kind in ("U", "S", "O") and "string" not in spec.dtypes[i]:
        raise TypeError(f"{where}: {what} holds {value.dtype} values, but the model takes "
                        f"{spec.dtypes[i]}: convert it to numbers")
    shape = tuple(value.shape)
    expected = spec.shapes[i]
    got = shape[1:]
    if _fits(got, expected):
        return
    hint = ""
    if _fits(shape, expected):
        hint = (": the batch axis is missing; batch the dataset (.batch(n))" if batched
                else ": the sample axis is missing; add it (x[None] for one sample)")
    elif len(got) + 1 == len(expected) and len(expected) >= 2:
        hint = ": it lacks an axis (a channel axis? x[..., None])"
    elif len(shape) == 1 and len(expected) >= 1:
        hint = ": are these labels? pass labels as the second item of a tuple (x, y)"
    unit = "a batch of" if batched else "data of"
    raise ValueError(
        f"{where}: {what} has shape {_shape_text(shape)}, but the model takes {unit} shape "
        f"{_shape_text((None, *expected))} (None: any size){hint}")


def check_inputs(x: Any, spec: ModelInputs, where: str, batched: bool = True) -> list[Any]:
    """``x``'s input arrays in model order, checked against the model's inputs."""
    arrays = _flat_inputs(x, spec, where)
    for i, value in enumerate(arrays):
        _check_array(value, i, spec, where, batched)
    return arrays


def _rows(value: Any) -> int:
    return int(value.shape[0]) if len(value.shape) else 0


def _check_labels(y: Any, where: str, name: str) -> None:
    if y is None:
        raise ValueError(f"{where} has no labels (y is None): {name} needs them; pass "
                         f"{_KINDS_WITH_LABELS}")
    if _numbers(y):
        raise TypeError(f"{where}: the labels are a Python {_type_name(y)} of numbers: pass "
                        "them as a NumPy array (np.asarray(...))")
    for leaf in leaves(y):
        _require_array(leaf, where, "a label array")


# --------------------------------------------------------------------------------------------
# Sources
# --------------------------------------------------------------------------------------------


def _split_batch(batch: Any, n_inputs: int) -> tuple[Any, Any, Any, int]:
    """``(x, y, sample_weight, length)`` of one batch (or of in-memory data), as Keras reads it.

    A tuple (or, inside a dataset, a list) is ``(x,)``, ``(x, y)`` or ``(x, y,
    sample_weight)``; for a model with several inputs, a tuple or list that starts with an
    array and has one item per input is the inputs themselves.
    """
    if isinstance(batch, (tuple, list)):
        if n_inputs > 1 and len(batch) == n_inputs and all(is_array(v) for v in batch):
            return batch, None, None, 1
        if not batch:
            raise ValueError("a batch is empty: expected arrays, or a tuple (x, y)")
        parts = list(batch) + [None] * (3 - len(batch))
        return parts[0], parts[1], parts[2], len(batch)
    return batch, None, None, 1


@dataclass(frozen=True, eq=False)
class Source:
    """A checked data source: what :func:`read` returns.

    Attributes
    ----------
    name : str
        The argument it came from (``"val_data"``...), for messages.
    kind : str
        :data:`ARRAYS`, :data:`DATASET`, :data:`PYDATASET`, :data:`BATCHES` or
        :data:`ITERATOR`.
    data : Any
        The value as given.
    spec : ModelInputs
        The model's inputs it was checked against.
    batch_size : int
        Batch size for in-memory arrays.
    steps : int or None
        The ``steps`` given (at most this many batches per pass), else ``None``.
    batches : int or None
        Batches in one pass, where known (``steps`` taken into account).
    x, y, sample_weight : Any
        For in-memory arrays: the inputs (in the model's structure), labels and weights.
    samples : int or None
        For in-memory arrays: the number of samples.
    """

    name: str
    kind: str
    data: Any
    spec: ModelInputs
    batch_size: int
    steps: int | None
    batches: int | None
    x: Any = None
    y: Any = None
    sample_weight: Any = None
    samples: int | None = None

    def keras_args(self) -> dict[str, Any]:
        """Keyword arguments for ``model.fit``/``model.evaluate``: the data (and the batch
        size for arrays). Steps are the caller's: ``steps`` or ``steps_per_epoch``."""
        if self.kind == ARRAYS:
            out = {"x": self.x, "y": self.y, "batch_size": self.batch_size}
            if self.sample_weight is not None:
                out["sample_weight"] = self.sample_weight
            return out
        return {"x": self.data}

    def first_batch(self) -> tuple[Any, Any, Any]:
        """``(x, y, sample_weight)`` of the first batch (for datasets, read from a new pass)."""
        if self.kind == ARRAYS:
            def head(value: Any) -> Any:
                return None if value is None else map_arrays(
                    lambda a: a[:self.batch_size], value)

            return head(self.x), head(self.y), head(self.sample_weight)
        for batch in self._raw():
            x, y, w, _ = _split_batch(batch, len(self.spec))
            return x, y, w
        raise ValueError(f"{self.name} is empty: there are no batches")

    def _raw(self) -> Iterator[Any]:
        """The batches as the source gives them (labels included), ``steps`` applied."""
        data = self.data
        source: Iterable[Any]
        if self.kind == DATASET:
            source = (iter(data) if keras.backend.backend() == "tensorflow"
                      else data.as_numpy_iterator())
        elif self.kind == PYDATASET:
            count = self.batches
            source = (data[i] for i in (range(count) if count is not None
                                        else itertools.count()))
        else:
            source = data
        return iter(source) if self.steps is None else itertools.islice(source, self.steps)

    def input_batches(self) -> Iterator[Any]:
        """The model inputs of each batch, in the model's structure, each batch checked.

        In-memory arrays are cut into batches of ``batch_size``; other sources give their own
        batches (labels and sample weights dropped).
        """
        spec = self.spec
        if self.kind == ARRAYS:
            arrays = _flat_inputs(self.x, spec, self.name)
            n = int(self.samples or 0)
            count = -(-n // self.batch_size)
            if self.steps is not None:
                count = min(count, self.steps)
            for start in range(0, count * self.batch_size, self.batch_size):
                part = slice(start, start + self.batch_size)
                yield spec.structure([a[part] for a in arrays])
            return
        for x, _ in self._checked_batches(labels=False):
            yield x

    def labelled_batches(self) -> Iterator[tuple[Any, Any]]:
        """``(x, y)`` of each batch: the inputs in the model's structure and the labels as
        given (sample weights dropped), each batch checked.

        For a source read with ``labels=True`` (in-memory arrays are cut into batches of
        ``batch_size``, as in :meth:`input_batches`).
        """
        if self.kind == ARRAYS:
            if self.y is None:
                raise ValueError(f"{self.name} has no labels")
            for start, x in zip(itertools.count(0, self.batch_size), self.input_batches()):
                yield x, _rows_of(self.y, slice(start, start + self.batch_size))
            return
        yield from self._checked_batches(labels=True)

    def _checked_batches(self, labels: bool) -> Iterator[tuple[Any, Any]]:
        spec = self.spec
        for i, batch in enumerate(self._raw(), 1):
            where = f"{self.name}, batch {i}"
            x, y, _, _ = _split_batch(batch, len(spec))
            arrays = check_inputs(x, spec, where)
            if labels:
                _check_labels(y, where, self.name)
            sizes = {_rows(a) for a in arrays}
            if labels:
                sizes |= {_rows(a) for a in leaves(y)}
            if len(sizes) != 1:
                raise ValueError(f"{where}: the inputs{' and labels' if labels else ''} have "
                                 f"different numbers of samples: {sorted(sizes)}")
            yield spec.structure(arrays), y

    def describe(self) -> dict[str, Any]:
        """What identifies this data, for a checkpoint: kind, shapes, dtypes and, for
        in-memory arrays, a SHA-256 of their bytes; the steps."""
        out: dict[str, Any] = {"kind": self.kind, "steps": self.steps}
        if self.kind == ARRAYS:
            digest = hashlib.sha256()
            shapes = []
            for part in (self.x, self.y, self.sample_weight):
                for leaf in leaves(part) if part is not None else []:
                    array = np.ascontiguousarray(keras.ops.convert_to_numpy(leaf))
                    shapes.append([list(array.shape), str(array.dtype)])
                    digest.update(str(array.shape).encode() + str(array.dtype).encode())
                    digest.update(repr(array.tolist()).encode() if array.dtype.hasobject
                                  else array.reshape(-1).view(np.uint8).data)
            out.update(arrays=shapes, sha256=digest.hexdigest(), batch_size=self.batch_size)
        elif self.kind == DATASET:
            out.update(element_spec=repr(self.data.element_spec),
                       cardinality=int(self.data.cardinality()))
        else:
            out.update(type=f"{type(self.data).__module__}.{type(self.data).__qualname__}",
                       batches=self.batches)
        return out


def _dataset_info(data: Any, name: str, steps: int | None, steps_name: str) -> int | None:
    cardinality = int(data.cardinality())
    if cardinality == -1 and steps is None:  # tf.data.INFINITE_CARDINALITY
        raise ValueError(f"{name} repeats forever (a tf.data.Dataset with .repeat()): pass "
                         f"{steps_name}, the number of batches to read from it")
    if cardinality == 0:
        raise ValueError(f"{name} is empty: the tf.data.Dataset has no batches")
    known = cardinality if cardinality >= 0 else None
    if steps is not None:
        known = steps if known is None else min(known, steps)
    return known


def _spec_shape(spec: Any) -> tuple[int | None, ...]:
    return tuple(None if d is None else int(d) for d in spec.shape)


class _SpecArray:
    """A stand-in array for a ``tf.TensorSpec``: its shape and dtype, for the checks."""

    def __init__(self, spec: Any) -> None:
        self.shape = _spec_shape(spec)
        self.dtype = spec.dtype.name

    def __getitem__(self, item: Any) -> Any:
        raise TypeError("a TensorSpec holds no values")


def _spec_array(spec: Any) -> _SpecArray | None:
    """A ``_SpecArray`` for a tensor spec; ``None`` for a ``None`` element (NoneTensorSpec)."""
    return None if getattr(spec, "shape", None) is None else _SpecArray(spec)


def _check_batch(batch: Any, spec: ModelInputs, name: str, where: str,
                 labels: bool) -> None:
    """Check one batch's structure, inputs and (if needed) labels."""
    if labels and not isinstance(batch, (tuple, list)):
        raise ValueError(f"{where} yields inputs without labels: {name} needs batches "
                         "(x, y) or (x, y, sample_weight)")
    x, y, _, length = _split_batch(batch, len(spec))
    if labels:
        if length < 2:
            raise ValueError(f"{where} yields batches (x,) without labels: {name} needs "
                             "batches (x, y) or (x, y, sample_weight)")
        if length > 3:
            raise ValueError(f"{where} yields tuples of {length} items: {name} needs batches "
                             "(x, y) or (x, y, sample_weight)")
        _check_labels(y, where, name)
    check_inputs(x, spec, where, batched=True)


def _dataset_source(data: Any, spec: ModelInputs, name: str, labels: bool,
                    steps: int | None, steps_name: str, batch_size: int) -> Source:
    known = _dataset_info(data, name, steps, steps_name)
    element = map_arrays(_spec_array, data.element_spec)
    _check_batch(element, spec, name, f"{name} (its element_spec)", labels)
    return Source(name, DATASET, data, spec, batch_size, steps, known)


def _pydataset_source(data: Any, spec: ModelInputs, name: str, labels: bool,
                      steps: int | None, steps_name: str, batch_size: int) -> Source:
    known = data.num_batches
    if known is None and steps is None:
        raise ValueError(f"{name} is a PyDataset without a length (it is infinite): pass "
                         f"{steps_name}, the number of batches to read from it")
    if known == 0:
        raise ValueError(f"{name} is empty: the PyDataset has no batches")
    if steps is not None:
        known = steps if known is None else min(known, steps)
    _check_batch(data[0], spec, name, f"{name}[0]", labels)
    return Source(name, PYDATASET, data, spec, batch_size, steps, known)


def _array_source(data: Any, spec: ModelInputs, name: str, labels: bool,
                  steps: int | None, batch_size: int) -> Source:
    if isinstance(data, tuple):
        x, y, w, length = _split_batch(data, len(spec))
        if length > 3:
            raise ValueError(
                f"{name} is a tuple of {length} items: a tuple is read as (x, y) or (x, y, "
                "sample_weight)" + ("" if labels else "; pass batches as a list or a "
                                    "generator"))
    else:
        x, y, w, length = data, None, None, 1
    if labels:
        if isinstance(data, list):
            raise ValueError(
                f"{name} is a list: pass (x, y) as a tuple, not a list (Keras reads a list "
                "as the inputs of a model with several inputs)")
        if length < 2 or y is None:
            given = ("(x, None)" if length >= 2 else "(x,)" if isinstance(data, tuple)
                     and len(data) == 1 else "the inputs alone")
            raise ValueError(f"{name} has no labels (given {given}): pass (x, y), or "
                             "(x, y, sample_weight)")
        _check_labels(y, name, name)
    arrays = check_inputs(x, spec, name, batched=False)
    sizes = {"inputs": {_rows(a) for a in arrays}}
    if labels:
        sizes["labels"] = {_rows(a) for a in leaves(y)}
    if w is not None:
        sizes["sample weights"] = {_rows(a) for a in leaves(w)}
    everything = set().union(*sizes.values())
    if len(everything) != 1:
        detail = ", ".join(f"{k} {sorted(v)}" for k, v in sizes.items())
        raise ValueError(f"{name}: the arrays have different numbers of samples ({detail})")
    samples = everything.pop()
    if samples == 0:
        raise ValueError(f"{name} is empty: its arrays have no samples")
    batches = -(-samples // batch_size)
    if steps is not None:
        batches = min(batches, steps)
    return Source(name, ARRAYS, data, spec, batch_size, steps, batches,
                  x=spec.structure(arrays), y=y if labels else None,
                  sample_weight=w if labels else None, samples=samples)


def _in_memory(data: Any, n_inputs: int) -> bool:
    """Arrays to split into batches (else: an iterable of batches)."""
    if is_array(data) or isinstance(data, (Mapping, tuple)):
        return True
    if isinstance(data, list) and data and all(is_array(v) for v in data):
        return len(data) == n_inputs  # else a list of batches
    return False


def read(data: Any, model: keras.Model, *, name: str, labels: bool, reiterable: bool,
         batch_size: int, steps: int | None = None, steps_name: str = "steps") -> Source:
    """Check ``data`` against ``model`` and say how to read it: one error, before any work.

    Parameters
    ----------
    data
        What the user passed.
    model
        The model it is for (only its inputs are read).
    name
        The argument's name, for messages (``"val_data"``).
    labels
        Whether labels are needed (``fit``/``evaluate``); without, they are allowed and
        ignored.
    reiterable
        Whether the data is read more than once (then a one-shot iterator is refused).
    batch_size
        Batch size for in-memory arrays.
    steps
        At most this many batches per pass (needed for data that repeats forever).
    steps_name
        The argument that sets ``steps``, for messages.

    Returns
    -------
    Source

    Raises
    ------
    TypeError
        For a value that is no data (a string, a number, a nested list of numbers...).
    ValueError
        For data that does not fit the model, lacks labels, repeats forever without
        ``steps``, is empty, or is a one-shot iterator where ``reiterable``.
    """
    spec = ModelInputs.of(model)
    if data is None:
        raise ValueError(f"{name} is None: pass "
                         f"{_KINDS_WITH_LABELS if labels else _KINDS_INPUTS}")
    if isinstance(data, (str, bytes)):
        raise TypeError(f"{name} is a {_type_name(data)}: pass "
                        f"{_KINDS_WITH_LABELS if labels else _KINDS_INPUTS}")
    if _is_tf_dataset(data):
        return _dataset_source(data, spec, name, labels, steps, steps_name, batch_size)
    if isinstance(data, keras.utils.PyDataset):
        return _pydataset_source(data, spec, name, labels, steps, steps_name, batch_size)
    if isinstance(data, list) and _numbers(data):
        raise TypeError(f"{name} is a Python list of numbers: pass it as a NumPy array "
                        "(np.asarray(...))")
    if labels and isinstance(data, list) and data and all(is_array(v) for v in data):
        return _array_source(data, spec, name, labels, steps, batch_size)  # refuses the list
    if _in_memory(data, len(spec)):
        return _array_source(data, spec, name, labels, steps, batch_size)
    if _one_shot(data):
        if reiterable:
            raise ValueError(
                f"{name} is a one-shot iterator ({_type_name(data)}): it is read more than "
                f"once (every round), and a second pass would find it empty; pass "
                f"{_KINDS_WITH_LABELS if labels else _KINDS_INPUTS} (a generator can be "
                "wrapped: tf.data.Dataset.from_generator(function, ...))")
        return _iterator_source(data, spec, name, labels, steps, batch_size)
    if _is_torch_loader(data):
        return _loader_source(data, spec, name, labels, steps, batch_size)
    if labels:
        raise TypeError(f"{name} is a {_type_name(data)}: pass {_KINDS_WITH_LABELS}")
    try:
        iter(data)
    except TypeError:
        raise TypeError(f"cannot read {name} of type {_type_name(data)}: pass "
                        f"{_KINDS_INPUTS}") from None
    if isinstance(data, Sequence):
        for i, batch in enumerate(data[:steps] if steps is not None else data, 1):
            _check_batch(batch, spec, name, f"{name}, batch {i}", labels)
        if not data:
            raise ValueError(f"{name} is empty: there are no batches")
    known = len(data) if isinstance(data, Sequence) else None
    if steps is not None:
        known = steps if known is None else min(known, steps)
    return Source(name, BATCHES, data, spec, batch_size, steps, known)


def _is_torch_loader(data: Any) -> bool:
    torch_data = sys.modules.get("torch.utils.data")
    return torch_data is not None and isinstance(data, torch_data.DataLoader)


def _loader_source(data: Any, spec: ModelInputs, name: str, labels: bool,
                   steps: int | None, batch_size: int) -> Source:
    """A ``torch.utils.data.DataLoader`` (Keras takes one on every backend): its first batch,
    from a pass of its own, is checked now."""
    for first in data:
        _check_batch(first, spec, name, f"{name}, batch 1", labels)
        break
    else:
        raise ValueError(f"{name} is empty: the DataLoader gives no batches")
    known = len(data) if hasattr(data, "__len__") else None
    if steps is not None:
        known = steps if known is None else min(known, steps)
    return Source(name, BATCHES, data, spec, batch_size, steps, known)


class _Peeked:
    """A one-shot iterator with its first item read ahead (and checked)."""

    def __init__(self, first: Any, rest: Iterator[Any]) -> None:
        self._it = itertools.chain([first], rest)

    def __iter__(self) -> Iterator[Any]:
        return self._it

    def __next__(self) -> Any:
        return next(self._it)


def _iterator_source(data: Any, spec: ModelInputs, name: str, labels: bool,
                     steps: int | None, batch_size: int) -> Source:
    """A one-shot iterator: its first batch is read ahead and checked now."""
    it = iter(data)
    try:
        first = next(it)
    except StopIteration:
        raise ValueError(f"{name} is empty: the iterator gives no batches (was it read "
                         "already?)") from None
    _check_batch(first, spec, name, f"{name}, batch 1", labels)
    return Source(name, ITERATOR, _Peeked(first, it), spec, batch_size, steps, steps)


def positive_steps(name: str, value: Any) -> int | None:
    """``value`` checked to be ``None`` or an integer >= 1."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer (or None), got {value!r}")
    return int(value)


def _rows_of(value: Any, part: slice) -> Any:
    """The rows ``part`` of every array of ``value``."""
    return map_arrays(lambda a: a[part], value)


def batch_rows(x: Any) -> int:
    """The number of samples of a batch (of its first array)."""
    return int(leaves(x)[0].shape[0])


def pad_batch(x: Any, rows: int) -> Any:
    """``x`` with its first sample repeated up to ``rows`` samples.

    A measurement pads a short last batch to the size of the first, so that a compiled
    function sees one input shape (one compilation), and drops the padding's rows after.
    """

    def pad(a: Any) -> Any:
        extra = rows - int(a.shape[0])
        if isinstance(a, np.ndarray):
            return np.concatenate([a, np.repeat(a[:1], extra, axis=0)])
        return keras.ops.concatenate([a, keras.ops.repeat(a[:1], extra, axis=0)])

    return map_arrays(pad, x)


def nan_rows(value: Any) -> int:
    """How many samples (rows) of a float array hold a NaN (0 for other dtypes)."""
    if isinstance(value, np.ndarray):
        if value.dtype.kind not in "fc":
            return 0
        rows = np.isnan(value).reshape(len(value), -1).any(axis=1) if value.ndim > 1 else (
            np.isnan(value))
        return int(np.count_nonzero(rows))
    if not keras.backend.is_float_dtype(keras.backend.standardize_dtype(value.dtype)):
        return 0
    ops = keras.ops
    flags = ops.isnan(value)
    if len(value.shape) > 1:
        flags = ops.any(flags, axis=tuple(range(1, len(value.shape))))
    return int(keras.ops.convert_to_numpy(ops.sum(ops.cast(flags, "int32"))))
