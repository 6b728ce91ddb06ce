"""Which loss QAT trains with: the model's saved compile configuration, or an explicit name; never a guess.

Losses are described by :class:`LossSpec` (a built-in tf_keras loss by its function name, plus ``from_logits`` and
other non-default options), read from Keras 3 or tf_keras models alike, and built into tf_keras loss objects.
"""
from __future__ import annotations

import difflib
import functools
import inspect
from dataclasses import dataclass
from typing import Any

import numpy as np

from tflq.errors import DataError, QatError, UsageError

HOW_TO_GIVE_LOSS = (
    "give it with `--loss NAME [--from-logits]` on the command line or `qat: {loss: NAME, from_logits: true}` "
    "in YAML (for example sparse_categorical_crossentropy)"
)
# Loss options that say nothing about the maths of one sample, so never block a translation.
_IGNORED_LOSS_OPTIONS = frozenset({"name", "dtype", "fn"})
_DEFAULT_REDUCTIONS = frozenset({"sum_over_batch_size", "auto"})


@dataclass(frozen=True)
class LossSpec:
    """A built-in loss by its tf_keras function name, e.g. ``sparse_categorical_crossentropy``.

    ``from_logits`` is ``None`` for losses that do not take it. ``options`` holds the other non-default constructor
    arguments (``label_smoothing``...). ``source`` says where it came from: ``"compile config"`` or ``"explicit"``.
    """

    name: str
    from_logits: bool | None = None
    options: tuple[tuple[str, Any], ...] = ()
    source: str = "explicit"

    def __post_init__(self) -> None:
        if self.name not in _loss_table():
            raise UsageError(f"unknown loss '{self.name}'{_did_you_mean(self.name, _loss_table())}")

    def describe(self) -> str:
        """``sparse_categorical_crossentropy(from_logits=True)``."""
        arguments = ([f"from_logits={self.from_logits}"] if self.from_logits is not None else []) + [
            f"{key}={value!r}" for key, value in self.options
        ]
        return f"{self.name}({', '.join(arguments)})"


@functools.lru_cache(maxsize=1)
def _loss_table() -> dict[str, type | None]:
    """Every built-in tf_keras loss function name -> its Loss class (None when there is only the function)."""
    import tf_keras

    table: dict[str, type | None] = {}
    for attribute in dir(tf_keras.losses):
        value = getattr(tf_keras.losses, attribute)
        if isinstance(value, type) and issubclass(value, tf_keras.losses.Loss):
            try:
                function = value().fn  # LossFunctionWrapper subclasses keep their function
            except (TypeError, ValueError, AttributeError):  # needs arguments, or has no ``fn``: no name to offer
                continue
            table[function.__name__] = value
    for attribute in dir(tf_keras.losses):
        value = getattr(tf_keras.losses, attribute)
        if callable(value) and not isinstance(value, type) and getattr(value, "__name__", None) == attribute:
            if attribute not in ("get", "serialize", "deserialize", "is_categorical_crossentropy"):
                table.setdefault(attribute, None)
    return table


def _did_you_mean(word: str, choices: Any) -> str:
    close = difflib.get_close_matches(word, list(choices), n=3)
    return f"; did you mean {' or '.join(close)}?" if close else f"; known losses: {', '.join(sorted(choices))}"


def _canonical_loss_name(identifier: str) -> str:
    """The tf_keras function name for a loss name, alias (``mse``) or class name (``MeanSquaredError``)."""
    import tf_keras

    if identifier in _loss_table():
        return identifier
    try:
        loss = tf_keras.losses.get(identifier)
    except (ValueError, TypeError):
        raise UsageError(f"unknown loss '{identifier}'{_did_you_mean(identifier, _loss_table())}") from None
    function = getattr(loss, "fn", loss)
    name = getattr(function, "__name__", "")
    if name not in _loss_table():
        raise UsageError(f"unknown loss '{identifier}'{_did_you_mean(identifier, _loss_table())}")
    return name


def _takes_from_logits(name: str) -> bool:
    loss_class = _loss_table().get(name)
    return loss_class is not None and "from_logits" in inspect.signature(loss_class).parameters


def _spec_from_object(loss: Any, where: str) -> LossSpec:
    """A LossSpec from what ``model.loss`` holds (Keras 3 or tf_keras): a name, a function or a Loss object."""
    if isinstance(loss, str):
        name = _canonical_loss_name(loss)
        return LossSpec(name, False if _takes_from_logits(name) else None, source="compile config")
    if callable(loss) and not hasattr(loss, "get_config"):
        name = getattr(loss, "__name__", repr(loss))
        if name not in _loss_table():
            raise QatError(f"{where} is '{name}', which is not a built-in loss; {HOW_TO_GIVE_LOSS}")
        return LossSpec(name, False if _takes_from_logits(name) else None, source="compile config")
    class_name = type(loss).__name__
    names = [name for name, loss_class in _loss_table().items() if loss_class is not None
             and loss_class.__name__ == class_name]
    if not names:
        raise QatError(f"{where} is a {class_name}, which is not a built-in loss; {HOW_TO_GIVE_LOSS}")
    name = names[0]
    config = dict(loss.get_config())
    from_logits = bool(config.pop("from_logits", False)) if _takes_from_logits(name) else None
    if config.get("reduction") in _DEFAULT_REDUCTIONS:
        config.pop("reduction")
    defaults = _loss_defaults(name)
    options = []
    for key, value in sorted(config.items()):
        if key in _IGNORED_LOSS_OPTIONS or value is None or defaults.get(key, object()) == value:
            continue
        if key not in defaults:
            raise QatError(f"{where}: option {key}={value!r} of {class_name} has no tf_keras equivalent; "
                           f"{HOW_TO_GIVE_LOSS}")
        options.append((key, value))
    return LossSpec(name, from_logits, tuple(options), source="compile config")


def _loss_defaults(name: str) -> dict[str, Any]:
    loss_class = _loss_table().get(name)
    if loss_class is None:
        return {}
    return {p.name: p.default for p in inspect.signature(loss_class).parameters.values()
            if p.name != "self" and p.default is not inspect.Parameter.empty}


def build_loss(spec: LossSpec) -> Any:
    """The tf_keras loss object (or function) for ``spec``."""
    import tf_keras

    loss_class = _loss_table()[spec.name]
    if loss_class is None:
        return getattr(tf_keras.losses, spec.name)
    arguments = dict(spec.options)
    if spec.from_logits is not None:
        arguments["from_logits"] = spec.from_logits
    return loss_class(**arguments)


def _output_keys(model: Any) -> list[set[str]]:
    """For each flat output of a Keras 3 or tf_keras model, the names a loss dict may use for it."""
    keys = [{name} for name in model.output_names]
    if hasattr(model, "_outputs_struct") and isinstance(model._outputs_struct, dict):  # Keras 3 dict outputs
        for position, key in enumerate(sorted(model._outputs_struct)):
            keys[position].add(key)
    return keys


def saved_loss_specs(model: Any) -> tuple[LossSpec, ...] | None:
    """The built-in loss per output that ``model`` (Keras 3 or tf_keras) was compiled with, or None if none.

    Raises :class:`QatError` when the model has a saved loss that tflq cannot use (custom, or missing for an output).
    """
    loss = getattr(model, "loss", None)
    if loss is None or (hasattr(model, "compiled") and not model.compiled):
        return None
    output_count = len(model.outputs)
    if isinstance(loss, dict):
        specs = []
        for keys in _output_keys(model):
            found = [loss[key] for key in keys if key in loss]
            if not found or found[0] is None:
                raise QatError(f"the model's saved loss has no entry for output {sorted(keys)}; {HOW_TO_GIVE_LOSS} "
                               f"(one loss is then applied to every output)")
            specs.append(_spec_from_object(found[0], "the model's saved loss"))
        return tuple(specs)
    if isinstance(loss, (list, tuple)):
        if len(loss) != output_count or any(item is None for item in loss):
            raise QatError(f"the model's saved loss has {len(loss)} entries for {output_count} outputs; "
                           f"{HOW_TO_GIVE_LOSS}")
        return tuple(_spec_from_object(item, "the model's saved loss") for item in loss)
    return (_spec_from_object(loss, "the model's saved loss"),) * output_count


def resolve_loss(model: Any, *, loss: str | None = None, from_logits: bool | None = None) -> tuple[LossSpec, ...]:
    """The loss for each output of ``model``: the explicit ``loss`` if given (applied to every output), else the one
    saved in the model's compile configuration. Never guessed.

    Returns one :class:`LossSpec` per output. Raises :class:`UsageError` when there is no loss to use, when
    ``from_logits`` contradicts the saved loss or does not apply to the loss, or for an unknown loss name.
    """
    output_count = len(model.outputs)
    if loss is not None:
        name = _canonical_loss_name(loss)
        if from_logits and not _takes_from_logits(name):
            raise UsageError(f"from_logits does not apply to loss '{name}'")
        spec = LossSpec(name, bool(from_logits) if _takes_from_logits(name) else None, source="explicit")
        return (spec,) * output_count
    saved = saved_loss_specs(model)
    if saved is None:
        raise UsageError(f"no loss to train with: the model has no saved compile configuration with a loss; "
                         f"{HOW_TO_GIVE_LOSS}")
    if from_logits is not None:
        for spec in saved:
            if spec.from_logits is None and from_logits:
                raise UsageError(f"from_logits does not apply to the model's saved loss {spec.describe()}")
            if spec.from_logits is not None and spec.from_logits != from_logits:
                raise UsageError(
                    f"from_logits={from_logits} contradicts the model's saved loss {spec.describe()}; to override "
                    f"it, give the loss too: --loss {spec.name}{' --from-logits' if from_logits else ''}"
                )
    return saved


# ---------------------------------------------------------------------------------------------- label checks

_CLASS_ID_LOSSES = frozenset({"sparse_categorical_crossentropy", "sparse_categorical_hinge"})
_ONE_HOT_LOSSES = frozenset({"categorical_crossentropy", "categorical_hinge", "categorical_focal_crossentropy"})
_UNIT_INTERVAL_LOSSES = frozenset({"binary_crossentropy", "binary_focal_crossentropy"})


def check_labels(spec: LossSpec, labels: Any, output_shape: tuple[Any, ...], *, source: str, output: str) -> None:
    """Refuse labels ``spec``'s loss cannot train on, before training: one line naming ``source`` (the data file,
    or "training data") and the model ``output`` the labels are for.

    ``output_shape`` is the model output's shape without the batch axis; its last axis is the number of classes.
    Class ids (sparse losses) must be integers in ``0..classes-1``; one-hot labels must have one column per class;
    binary labels must be in [0, 1]; every label must be a finite number (never strings).

    Raises :class:`DataError`.
    """
    labels = np.asarray(labels)
    what = f"{source}: labels for output '{output}'"
    classes = output_shape[-1] if output_shape and isinstance(output_shape[-1], int) else None
    wanted = _wanted_labels(spec, classes)
    if labels.dtype.kind not in "biuf":
        example = labels.reshape(-1)[:1].tolist()
        kind = "strings" if labels.dtype.kind in "US" else f"of dtype {labels.dtype}"
        shown = f" (first: {example[0]!r})" if example else ""
        raise DataError(f"{what} are {kind}{shown}; {spec.name} needs {wanted}")
    if labels.dtype.kind == "f" and not np.all(np.isfinite(labels)):
        bad = int(np.count_nonzero(~np.isfinite(labels)))
        raise DataError(f"{what} hold {bad} NaN or inf value(s); {spec.name} needs {wanted}")
    if labels.size == 0:
        return
    if spec.name in _CLASS_ID_LOSSES:
        if labels.ndim > 2 or (labels.ndim == 2 and labels.shape[1] != 1):
            hint = (" (one-hot labels need the loss categorical_crossentropy)"
                    if labels.ndim == 2 and labels.shape[1] == classes else "")
            raise DataError(f"{what} have shape {labels.shape}; {spec.name} needs {wanted}, one per "
                            f"sample{hint}")
        if labels.dtype.kind == "f" and not np.array_equal(labels, np.round(labels)):
            fractional = labels[labels != np.round(labels)].reshape(-1)[0]
            raise DataError(f"{what} are not whole numbers (found {fractional:g}); {spec.name} needs {wanted}")
        low, high = labels.min(), labels.max()
        if classes is not None and (low < 0 or high >= classes):
            outside = int(np.count_nonzero((labels < 0) | (labels >= classes)))
            raise DataError(f"{what} range {low:g}..{high:g} ({outside} of {labels.size} outside); "
                            f"{spec.name} needs {wanted}")
    elif spec.name in _ONE_HOT_LOSSES:
        if classes is not None and (labels.ndim < 2 or labels.shape[-1] != classes):
            hint = (f" (class ids need the loss sparse_{spec.name})"
                    if labels.ndim == 1 or (labels.ndim == 2 and labels.shape[1] == 1) else "")
            raise DataError(f"{what} have shape {labels.shape}; {spec.name} needs {wanted}{hint}")
    elif spec.name in _UNIT_INTERVAL_LOSSES:
        low, high = labels.min(), labels.max()
        if low < 0 or high > 1:
            raise DataError(f"{what} range {low:g}..{high:g}; {spec.name} needs {wanted}")


def _wanted_labels(spec: LossSpec, classes: int | None) -> str:
    """What ``spec``'s loss wants as labels, in words, with the model's number of classes."""
    if spec.name in _CLASS_ID_LOSSES:
        if classes is None:
            return "integer class ids"
        return f"integer class ids 0..{classes - 1} (the model's output has {classes} classes)"
    if spec.name in _ONE_HOT_LOSSES:
        if classes is None:
            return "one-hot labels"
        return f"one-hot labels of {classes} columns (the model's output has {classes} classes)"
    if spec.name in _UNIT_INTERVAL_LOSSES:
        return "numbers in [0, 1]"
    return "finite numbers"
