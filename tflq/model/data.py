"""The one data layer: calibration, evaluation and training data, checked against the model's signature.

Sources (``spec`` strings):

* ``path.npz``  single input: key ``x`` (or the only non-label array); several inputs: keys named after the
  model inputs. Labels: ``y`` for a single-output model, ``y_<output name>`` per output otherwise.
* ``path.npy``  one array of samples for a single-input model (memory-mapped, so large files stream).
* ``folder/``   images (png, jpg, jpeg, bmp, gif), directly or in class subfolders (sorted folder names are the
  labels 0, 1, ...); resized to the model input and scaled as :class:`ImageOptions` says. Read lazily.
* ``module:function``  a function returning an iterable of samples: an array, a list of arrays in input order
  (TensorFlow's representative-dataset idiom) or a dict keyed by input names (plus ``y``/``y_<output>`` labels).
* ``random``  uniform random inputs; only when asked for explicitly, with a loud warning.

Every sample is checked: shape (a missing batch axis is added), dtype (float64 becomes float32 with a notice),
NaN/inf, channel count. Errors name the source, the input, what was expected and what was found.
"""
from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tflq.errors import DataError, UsageError
from tflq.model import user_code
from tflq.model.file_checks import NUMPY_READ_ERRORS, check_numpy_file
from tflq.model.load import TensorSpec, resolve_object
from tflq.model.options import IMAGE_SCALES, ImageOptions  # noqa: F401 (re-exported)

log = logging.getLogger("tflq")

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif")
RANDOM = "random"
_IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
_IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


@dataclass(frozen=True)
class Batch:
    """Model inputs (name -> array with batch axis) and, when the data has them, labels (output name -> array)."""

    inputs: dict[str, np.ndarray]
    labels: dict[str, np.ndarray] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(next(iter(self.inputs.values())))


class Dataset:
    """Validated samples from one source. Iterating reads lazily; nothing is loaded twice."""

    def __init__(
        self,
        source: str,
        inputs: Sequence[TensorSpec],
        outputs: Sequence[TensorSpec],
        reader: Callable[[], Iterator[tuple[dict[str, np.ndarray], dict[str, np.ndarray]]]],
        limit: int | None,
        has_labels: bool,
        arrays: tuple[dict[str, np.ndarray], dict[str, np.ndarray]] | None = None,
    ) -> None:
        self.source = source
        self.inputs = tuple(inputs)
        self.outputs = tuple(outputs)
        self.limit = limit
        self.has_labels = has_labels
        self._reader = reader
        # Array-backed sources (.npz, .npy) also give their whole arrays (input name -> array, output name ->
        # labels): batches are then sliced and checked a batch at a time, with the same checks and messages.
        self._arrays = arrays

    @property
    def count(self) -> int | None:
        """The number of samples (after the limit) when known without reading the data, else None."""
        if self._arrays is None:
            return None
        first = next(iter(self._arrays[0].values()))
        total = first.shape[0] if first.ndim else 0
        return total if self.limit is None else min(total, self.limit)

    def _checked(self) -> Iterator[tuple[dict[str, np.ndarray], dict[str, np.ndarray]]]:
        count = 0
        for sample_inputs, sample_labels in itertools.islice(self._reader(), self.limit):
            if count == 0:
                _cast_notices(self.source, self.inputs, sample_inputs)
            checked = {spec.name: _check_sample(self.source, spec, sample_inputs[spec.name], count)
                       for spec in self.inputs}
            yield checked, sample_labels
            count += 1
        if count == 0:
            raise DataError(f"{self.source}: no samples (the data is empty)")

    def samples(self) -> Iterator[dict[str, np.ndarray]]:
        """Yield each sample as input name -> array with a batch axis of 1 (a representative dataset)."""
        for sample_inputs, _ in self._checked():
            yield {name: value[np.newaxis] for name, value in sample_inputs.items()}

    def batches(self, batch_size: int) -> Iterator[Batch]:
        """Yield batches of up to ``batch_size`` samples, with labels when the data has them."""
        if batch_size < 1:
            raise UsageError(f"batch size must be at least 1, got {batch_size}")
        if self._arrays is not None:
            yield from self._array_batches(self._arrays, batch_size)
            return
        chunk: list[tuple[dict[str, np.ndarray], dict[str, np.ndarray]]] = []
        for item in self._checked():
            chunk.append(item)
            if len(chunk) == batch_size:
                yield _stack(chunk)
                chunk = []
        if chunk:
            yield _stack(chunk)

    def _array_batches(
        self, arrays: tuple[dict[str, np.ndarray], dict[str, np.ndarray]], batch_size: int
    ) -> Iterator[Batch]:
        input_arrays, label_arrays = arrays
        count = self.count or 0
        if count == 0:
            raise DataError(f"{self.source}: no samples (the data is empty)")
        _cast_notices(self.source, self.inputs, {name: value[:0] for name, value in input_arrays.items()})
        for start in range(0, count, batch_size):
            stop = min(start + batch_size, count)
            yield Batch(
                inputs={
                    spec.name: _check_batch(self.source, spec, input_arrays[spec.name][start:stop], start)
                    for spec in self.inputs
                },
                labels={name: np.asarray(value[start:stop]) for name, value in label_arrays.items()},
            )

    def load(self) -> Batch:
        """All samples (up to the limit) as one batch."""
        return _stack(list(self._checked()))


def _cast_notices(source: str, inputs: Sequence[TensorSpec], sample_inputs: dict[str, Any]) -> None:
    """One notice per input whose dtype is cast (float64 -> float32, int64 -> int32 when the values fit)."""
    for spec in inputs:
        found = np.asarray(sample_inputs[spec.name]).dtype
        if found == np.float64 and spec.dtype == "float32":
            log.info("%s: input %r is float64; cast to float32", source, spec.name)
        elif found.kind in "iu" and np.dtype(spec.dtype).kind in "iu" and not np.can_cast(found, spec.dtype):
            log.info("%s: input %r is %s; cast to %s (every value is checked to fit)",
                     source, spec.name, found.name, spec.dtype)


def _check_labels(source: str, labels: dict[str, Any], where: str = "") -> None:
    for output, value in labels.items():
        dtype = np.asarray(value).dtype
        if dtype.kind not in "biuf":
            raise DataError(
                f"{source}: labels for output {output!r}{where} have dtype {dtype.name} (strings or objects); "
                "expected numbers (class ids or target values)"
            )


def _fit_integers(where: str, array: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Cast integers to a narrower integer dtype only when every value fits; else name the range."""
    info = np.iinfo(dtype)
    if array.size:
        low, high = int(array.min()), int(array.max())
        if low < info.min or high > info.max:
            raise DataError(
                f"{where}: expected dtype {dtype.name}, found {array.dtype.name} with values {low}..{high} outside "
                f"the {dtype.name} range {info.min}..{info.max}"
            )
    return array.astype(dtype)


def _stack(chunk: list[tuple[dict[str, np.ndarray], dict[str, np.ndarray]]]) -> Batch:
    inputs = {name: np.stack([sample[name] for sample, _ in chunk]) for name in chunk[0][0]}
    labels = {name: np.stack([label[name] for _, label in chunk]) for name in chunk[0][1]}
    return Batch(inputs=inputs, labels=labels)


def _check_batch(source: str, spec: TensorSpec, values: np.ndarray, first_index: int) -> np.ndarray:
    """:func:`_check_sample` for a stack of samples: the first sample decides shape and dtype (all share them);
    NaN/inf is searched in the whole batch and reported for the first sample that has it, with the same message."""
    first = _check_sample(source, spec, values[0], first_index)
    batch = np.asarray(values)
    if batch.ndim == first.ndim + 2 and batch.shape[1] == 1:
        batch = batch[:, 0]
    if batch.dtype.kind in "iu" and first.dtype.kind in "iu" and not np.can_cast(batch.dtype, first.dtype):
        info = np.iinfo(first.dtype)
        flat = batch.reshape(len(batch), -1)
        outside = ((flat < info.min) | (flat > info.max)).any(axis=1)
        if outside.any():  # report the first sample that does not fit, with the per-sample message
            bad = int(np.argmax(outside))
            _check_sample(source, spec, values[bad], first_index + bad)
    batch = np.ascontiguousarray(batch, dtype=first.dtype)
    if batch.dtype.kind == "f" and not np.isfinite(batch).all():
        bad = int(np.argmin(np.isfinite(batch.reshape(len(batch), -1)).all(axis=1)))
        _check_sample(source, spec, values[bad], first_index + bad)
    return batch


def _check_sample(source: str, spec: TensorSpec, value: Any, index: int) -> np.ndarray:
    array = np.asarray(value)
    expected = spec.shape[1:]
    where = f"{source}: input {spec.name!r}, sample {index}"
    if array.ndim == len(expected) + 1 and array.shape[0] == 1:
        array = array[0]
    if array.ndim != len(expected) or any(e is not None and e != f for e, f in zip(expected, array.shape, strict=True)):
        want = "(" + ", ".join("?" if e is None else str(e) for e in expected) + ")"
        if (
            array.ndim == len(expected)
            and len(expected) >= 3
            and array.shape[:-1]
            == tuple(e if e is not None else f for e, f in zip(expected[:-1], array.shape[:-1], strict=True))
        ):
            raise DataError(f"{where}: expected {expected[-1]} channels (shape {want}), found {array.shape[-1]} (shape "
                            f"{array.shape})")
        raise DataError(f"{where}: expected shape {want} per sample, found {tuple(array.shape)}")
    want_dtype = np.dtype(spec.dtype)
    if array.dtype != want_dtype:
        if array.dtype == np.float64 and want_dtype == np.float32:
            array = array.astype(np.float32)
        elif array.dtype.kind in "iub" and want_dtype.kind in "iu" and np.can_cast(array.dtype, want_dtype):
            array = array.astype(want_dtype)
        elif array.dtype.kind in "iu" and want_dtype.kind in "iu":
            array = _fit_integers(where, array, want_dtype)
        else:
            raise DataError(f"{where}: expected dtype {want_dtype.name}, found {array.dtype.name}")
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        raise DataError(f"{where}: contains NaN or infinite values")
    return array


def batched_samples(samples: list[dict[str, np.ndarray]], batch: int | None) -> list[dict[str, np.ndarray]]:
    """Samples of batch one (``Dataset.samples``) stacked into batches of ``batch``, for a model exported with that
    static batch (it takes no other size); None or 1: the samples unchanged. The last batch is completed with the
    first samples again: repeated values add no new minimum or maximum, so calibrated ranges are the samples'."""
    if batch is None or batch == 1 or not samples:
        return samples
    cycled = [samples[index % len(samples)] for index in range(-(-len(samples) // batch) * batch)]
    return [
        {name: np.concatenate([sample[name] for sample in cycled[start : start + batch]]) for name in samples[0]}
        for start in range(0, len(cycled), batch)
    ]


def open_data(
    spec: str,
    inputs: Sequence[TensorSpec],
    *,
    outputs: Sequence[TensorSpec] = (),
    limit: int | None = None,
    role: str = "calibration",
    images: ImageOptions | None = None,
    seed: int = 0,
) -> Dataset:
    """Open a data source for a model with these ``inputs`` (and ``outputs``, for labels).

    ``role`` words the messages ("calibration", "evaluation", "training"). Returns a lazily read Dataset.
    Raises DataError (bad or missing data) or UsageError (bad spec).
    """
    if not inputs:
        raise UsageError("the model has no inputs")
    if limit is not None and limit < 1:
        raise UsageError(f"--{'calib' if role == 'calibration' else role}-samples must be at least 1, got {limit}")
    if spec == RANDOM:
        return _random(inputs, outputs, limit or 200, role, seed)
    path = Path(spec)
    if path.suffix.lower() == ".npz":
        return _npz(path, inputs, outputs, limit)
    if path.suffix.lower() == ".npy":
        return _npy(path, inputs, outputs, limit)
    if path.is_dir():
        return _image_folder(path, inputs, outputs, limit, images or ImageOptions())
    if ":" in spec and not path.exists():
        return _function(spec, inputs, outputs, limit)
    if not path.exists():
        raise DataError(f"{spec}: {role} data not found (expected a .npz/.npy file, an image folder or "
                        "module:function)")
    raise DataError(f"{spec}: unsupported {role} data format {path.suffix or '(no suffix)'!r}; expected .npz, .npy, an "
                    "image folder or module:function")


def _label_keys(outputs: Sequence[TensorSpec]) -> dict[str, str]:
    """Data key -> output name for labels."""
    if len(outputs) == 1:
        return {"y": outputs[0].name, f"y_{outputs[0].name}": outputs[0].name}
    return {f"y_{spec.name}": spec.name for spec in outputs}


def _npz(path: Path, inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec], limit: int | None) -> Dataset:
    if not path.exists():
        raise DataError(f"{path}: no such file")
    check_numpy_file(path, ".npz", DataError)
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
    except ValueError as error:  # an array of Python objects (needs pickle)
        raise DataError(f"{path}: cannot read the .npz file: {_numpy_reason(error)}") from None
    except NUMPY_READ_ERRORS as error:  # a corrupt archive
        raise DataError(f"{path}: a truncated or damaged .npz file ({type(error).__name__}: {error})") from None
    label_keys = _label_keys(outputs)
    candidates = {key: value for key, value in arrays.items() if not key.startswith("y")}
    input_arrays: dict[str, np.ndarray] = {}
    if len(inputs) == 1:
        name = inputs[0].name
        if name in arrays:
            input_arrays[name] = arrays[name]
        elif "x" in arrays:
            input_arrays[name] = arrays["x"]
        elif len(candidates) == 1:
            input_arrays[name] = next(iter(candidates.values()))
        else:
            raise DataError(f"{path}: expected key 'x' (or {name!r}) for the model input, found keys {sorted(arrays)}")
    else:
        missing = [spec.name for spec in inputs if spec.name not in arrays]
        if missing:
            raise DataError(f"{path}: the model has inputs {[s.name for s in inputs]}; missing key(s) {missing}, "
                            f"found keys {sorted(arrays)}")
        input_arrays = {spec.name: arrays[spec.name] for spec in inputs}
    label_arrays = {output: arrays[key] for key, output in label_keys.items() if key in arrays}
    if outputs and len(outputs) > 1 and "y" in arrays:
        raise DataError(
            f"{path}: key 'y' is ambiguous for a model with outputs {[s.name for s in outputs]}; name labels y_<output>"
        )
    lengths = {f"input {name!r}": len(value) if value.ndim else 0 for name, value in input_arrays.items()}
    count = next(iter(lengths.values()))
    if any(length != count for length in lengths.values()):
        raise DataError(f"{path}: inputs have different sample counts: {lengths}")
    _check_labels(str(path), label_arrays)
    for output, value in label_arrays.items():
        if value.ndim == 0 or len(value) != count:
            raise DataError(f"{path}: labels for output {output!r} have {len(value) if value.ndim else 0} rows, "
                            f"expected {count} (one per sample)")

    def reader() -> Iterator[tuple[dict[str, np.ndarray], dict[str, np.ndarray]]]:
        for index in range(count):
            yield (
                {name: value[index] for name, value in input_arrays.items()},
                {name: value[index] for name, value in label_arrays.items()},
            )

    return Dataset(
        str(path), inputs, outputs, reader, limit, has_labels=bool(label_arrays), arrays=(input_arrays, label_arrays)
    )


def _npy(path: Path, inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec], limit: int | None) -> Dataset:
    if not path.exists():
        raise DataError(f"{path}: no such file")
    if len(inputs) != 1:
        raise DataError(f"{path}: a .npy file holds one array, but the model has {len(inputs)} inputs; use a .npz with "
                        f"keys {[s.name for s in inputs]}")
    check_numpy_file(path, ".npy", DataError)
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except ValueError as error:  # a Python-object array, or a header that does not fit the file
        raise DataError(f"{path}: cannot read the .npy file: {_numpy_reason(error)}") from None
    except NUMPY_READ_ERRORS as error:  # a corrupt file
        raise DataError(f"{path}: a truncated or damaged .npy file ({type(error).__name__}: {error})") from None
    name = inputs[0].name

    def reader() -> Iterator[tuple[dict[str, np.ndarray], dict[str, np.ndarray]]]:
        for index in range(len(array)):
            yield {name: np.array(array[index])}, {}

    if array.ndim == 0:
        raise DataError(f"{path}: holds a single value, expected an array of samples")
    return Dataset(str(path), inputs, outputs, reader, limit, has_labels=False, arrays=({name: array}, {}))


def _numpy_reason(error: Exception) -> str:
    text = str(error)
    if "pickle" in text or "Python objects" in text:
        return "it holds Python objects (dtype object), which tflq does not unpickle; save numeric arrays"
    if "mmap length" in text or "larger than" in text or "No data left" in text:
        return f"the file is truncated ({text})"
    return text


def _image_files(folder: Path) -> tuple[list[tuple[Path, int | None]], list[str]]:
    direct = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    class_dirs = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if direct and class_dirs:
        raise DataError(f"{folder}: mixes images and class subfolders; use one layout")
    if direct:
        return [(p, None) for p in direct], []
    files: list[tuple[Path, int | None]] = []
    for label, class_dir in enumerate(class_dirs):
        files.extend(
            (p, label) for p in sorted(class_dir.iterdir()) if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
        )
    return files, [d.name for d in class_dirs]


def _image_folder(
    folder: Path, inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec], limit: int | None, options: ImageOptions
) -> Dataset:
    if len(inputs) != 1:
        raise DataError(f"{folder}: an image folder feeds one input, but the model has {len(inputs)} inputs")
    spec = inputs[0]
    if len(spec.shape) != 4 or spec.shape[1] is None or spec.shape[2] is None:
        raise DataError(f"{folder}: image folders need an input of shape (batch, height, width, channels); "
                        f"{spec.describe()}")
    height, width, channels = spec.shape[1], spec.shape[2], spec.shape[3]
    if channels not in (1, 3):
        raise DataError(f"{folder}: input {spec.name!r} has {channels} channels; image folders give 1 (grayscale) or 3 "
                        "(RGB)")
    files, classes = _image_files(folder)
    if not files:
        raise DataError(f"{folder}: no images found (looked for {', '.join(IMAGE_SUFFIXES)})")
    labelled = bool(classes) and len(outputs) == 1

    def reader() -> Iterator[tuple[dict[str, np.ndarray], dict[str, np.ndarray]]]:
        from PIL import Image

        for file_path, label in files:
            try:
                with Image.open(file_path) as opened:
                    mode = "L" if channels == 1 else "RGB"
                    image = opened.convert(mode).resize((width, height), Image.Resampling.BILINEAR)
                    pixels = np.asarray(image, dtype=np.float32)
            except Image.DecompressionBombError as error:
                raise DataError(f"{file_path}: image refused, over PIL's decompression-bomb limit ({error})") from None
            except (OSError, ValueError, SyntaxError) as error:  # PIL: unreadable, truncated or zero-size image
                raise DataError(f"{file_path}: cannot read the image: {error}") from None
            if channels == 1:
                pixels = pixels[..., np.newaxis]
            labels = {outputs[0].name: np.array(label, dtype=np.int64)} if labelled and label is not None else {}
            yield {spec.name: _scale(pixels, options.scale)}, labels

    return Dataset(str(folder), inputs, outputs, reader, limit, has_labels=labelled)


def _scale(pixels: np.ndarray, scale: str) -> np.ndarray:
    if scale == "unit":
        return pixels / 255.0
    if scale == "symmetric":
        return pixels / 127.5 - 1.0
    if scale == "imagenet":
        channels = pixels.shape[-1]
        return ((pixels / 255.0 - _IMAGENET_MEAN[:channels]) / _IMAGENET_STD[:channels]).astype(np.float32)
    return pixels


def _function(spec: str, inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec], limit: int | None) -> Dataset:
    function = resolve_object(spec, "data function")
    if not callable(function):
        raise UsageError(f"data function {spec!r} is not callable")
    label_keys = _label_keys(outputs)
    names = [s.name for s in inputs]

    what = f"data function {spec!r}"

    def reader() -> Iterator[tuple[dict[str, np.ndarray], dict[str, np.ndarray]]]:
        produced = user_code.call(what, function, error_class=DataError)
        if not isinstance(produced, Iterable):
            raise DataError(f"{spec}: returned {type(produced).__name__}, expected an iterable of samples")
        for index, sample in enumerate(user_code.iterate(what, produced, error_class=DataError)):
            if isinstance(sample, dict):
                missing = [n for n in names if n not in sample and not (len(names) == 1 and "x" in sample)]
                if missing:
                    raise DataError(f"{spec}: sample {index} has keys {sorted(sample)}, missing input(s) {missing}")
                values = {n: sample[n] if n in sample else sample["x"] for n in names}
                labels = {out: np.asarray(sample[key]) for key, out in label_keys.items() if key in sample}
                _check_labels(spec, labels, f", sample {index}")
                yield values, labels
            elif isinstance(sample, (list, tuple)):
                if len(sample) != len(names):
                    raise DataError(f"{spec}: sample {index} has {len(sample)} arrays, the model has {len(names)} "
                                    f"inputs {names}")
                yield dict(zip(names, sample, strict=True)), {}
            elif len(names) == 1:
                yield {names[0]: sample}, {}
            else:
                raise DataError(f"{spec}: sample {index} is one array, the model has {len(names)} inputs {names}; "
                                "yield a list or dict")

    return Dataset(spec, inputs, outputs, reader, limit, has_labels=False)


def _random(inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec], count: int, role: str, seed: int) -> Dataset:
    for spec in inputs:
        if any(dim is None for dim in spec.shape[1:]):
            raise DataError(f"random {role} data: input {spec.name!r} has a dynamic dimension {spec.shape}; give real "
                            "data")
    log.warning(
        "RANDOM %s DATA: %d uniform random samples; quantization ranges and any accuracy figure will mean nothing",
        role.upper(),
        count,
    )

    def reader() -> Iterator[tuple[dict[str, np.ndarray], dict[str, np.ndarray]]]:
        rng = np.random.default_rng(seed)
        for _ in range(count):
            yield {
                spec.name: rng.random(spec.shape[1:], dtype=np.float32).astype(spec.dtype)  # type: ignore[arg-type]
                for spec in inputs
            }, {}

    return Dataset(RANDOM, inputs, outputs, reader, count, has_labels=False)
