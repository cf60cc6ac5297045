"""Model files: ``BPR.save`` and ``BPR.load`` (one ``.npz``, written atomically, read without pickles).

The reader checks every entry before the model takes any (:func:`bpr_numpy._archives.read_npz`
reads the archive itself); the format is versioned by :data:`FORMAT_VERSION`.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from dataclasses import asdict
from typing import TYPE_CHECKING

import numpy as np

from .._files import give_ordinary_mode
from .._parameters import INT64_MAX
from .._validation import as_user_items, csr_from_arrays
from ..hybrid import Features
from ._factor_model import PARAMETER_NAMES
from ._reporting import EpochReport

if TYPE_CHECKING:  # pragma: no cover
    from ._estimator import BPR

__all__ = ["FORMAT_NAME", "FORMAT_VERSION"]

#: The ``format`` entry of a model file: what ``BPR.load`` expects to find there.
FORMAT_NAME = "bpr_numpy.model"
#: Version of the model-file layout that ``BPR.save`` writes and ``BPR.load`` reads.
FORMAT_VERSION = 1

# Every entry BPR.save may write into a model file.
_MODEL_ENTRIES = frozenset(
    {
        "meta",
        "user_factors",
        "item_factors",
        "item_bias",
        "user_items_indptr",
        "user_items_indices",
        "user_ids",
        "item_ids",
        "item_titles",
        *Features.ENTRIES,
    }
)


def save(model: BPR, path: str | os.PathLike, *, include_interactions: bool = True) -> None:
    """:meth:`bpr_numpy.BPR.save`: the metadata and arrays, checked finite, written by :func:`_atomic_savez`."""
    model._check_fitted()
    model._check_params()  # load would refuse parameters that break a rule: refuse to write them
    for name, a in zip(PARAMETER_NAMES, model._parameters(), strict=False):
        if not np.isfinite(a).all():  # load would refuse the file: refuse to write it
            raise ValueError(f"cannot save: model.{name} holds NaN or infinite values")
    params = model.get_params()
    params["dtype"] = np.dtype(model.dtype).name
    for key in ("item_bias", "identity", "normalize_features"):
        if isinstance(params[key], np.bool_):  # json writes Python bools only
            params[key] = bool(params[key])
    rs = params["random_state"]
    params["random_state"] = rs if rs is None or isinstance(rs, (int, np.integer)) else None
    if params["random_state"] is not None:
        params["random_state"] = int(params["random_state"])
    meta = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "params": params,
        "epochs_done": model._epochs_done,
        "seed": model._seed,
        "history": [asdict(r) for r in model.history_],
    }
    arrays = {
        "meta": np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8),
        "user_factors": model.user_factors,
        "item_factors": model.item_factors,
        "item_bias": model.item_biases,
    }
    if model._features is not None:
        feature_arrays, meta["features"] = model._features.to_arrays()
        arrays.update(feature_arrays)
    if include_interactions and model._user_items is not None:
        arrays["user_items_indptr"] = model._user_items.indptr
        arrays["user_items_indices"] = model._user_items.indices
    for key, expected in (("user_ids", model.n_users), ("item_ids", model.n_items), ("item_titles", model.n_items)):
        value = getattr(model, key)
        if value is not None:
            arrays[key] = _id_array(value, key, expected, titles=key == "item_titles")
    # The metadata lists the entries, so a load can tell an optional entry lost to damage
    # (a flipped length in the zip directory hides the entries after it) from one never written.
    meta["entries"] = sorted(arrays)
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8)
    _atomic_savez(os.fspath(path), arrays)


def from_arrays(cls: type[BPR], arrays: dict, path: str) -> BPR:
    def bad(why: str) -> ValueError:
        return ValueError(f"{path} is not a valid bpr_numpy model file: {why}")

    if "meta" not in arrays:
        raise bad("no 'meta' entry (not written by BPR.save)")
    try:
        meta = json.loads(arrays["meta"].tobytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise bad(f"unreadable metadata ({type(exc).__name__}: {exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT_NAME:
        raise bad("its metadata does not name the bpr_numpy model format")
    version = meta.get("format_version")
    if version != FORMAT_VERSION:
        raise bad(f"format version {version!r}; this bpr_numpy reads version {FORMAT_VERSION}")
    for key in ("user_factors", "item_factors", "item_bias"):
        if key not in arrays:
            raise bad(f"missing array {key!r}")
    # An entry save never writes is damage (a flipped bit in an optional entry's name would
    # otherwise drop the titles or ids without a word), or another program's file.
    unknown = sorted(set(arrays) - _MODEL_ENTRIES)
    if unknown:
        raise bad(f"unexpected entries {unknown}")
    listed = meta.get("entries")  # absent in files written before it was recorded
    if listed is not None and (not isinstance(listed, list) or set(map(str, listed)) != set(arrays)):
        missing = sorted(set(map(str, listed)) - set(arrays)) if isinstance(listed, list) else listed
        raise bad(f"its entries do not match the ones it lists (missing: {missing})")
    params = meta.get("params", {})
    if not isinstance(params, dict):
        raise bad(f"invalid hyperparameters (a {type(params).__name__}, not a mapping)")
    params = dict(params)
    try:
        params["dtype"] = np.dtype(params.get("dtype", "float32")).type
        model = cls(**params)
    except (TypeError, ValueError) as exc:
        raise bad(f"invalid hyperparameters ({exc})") from None
    U, V, b = arrays["user_factors"], arrays["item_factors"], arrays["item_bias"]
    dtype = np.dtype(model.dtype)
    if U.ndim != 2 or V.ndim != 2 or U.shape[1] != model.factors or V.shape[1] != model.factors:
        raise bad(f"factor arrays of shapes {U.shape} and {V.shape} do not match factors={model.factors}")
    if U.shape[0] == 0 or V.shape[0] == 0:
        raise bad(f"factor arrays of shapes {U.shape} and {V.shape}: no user or no item")
    if b.shape != (V.shape[0],):
        raise bad(f"item_bias has shape {b.shape}, expected ({V.shape[0]},)")
    if U.dtype != dtype or V.dtype != dtype or b.dtype != dtype:
        raise bad(f"arrays are not of the model's dtype {dtype}")
    if not (np.isfinite(U).all() and np.isfinite(V).all() and np.isfinite(b).all()):
        raise bad("parameters hold NaN or infinite values")
    # An array saved in Fortran order loads in Fortran order: the kernels take C order.
    U, V, b = np.ascontiguousarray(U), np.ascontiguousarray(V), np.ascontiguousarray(b)
    user_items = None
    if "user_items_indptr" in arrays or "user_items_indices" in arrays:
        if "user_items_indptr" not in arrays or "user_items_indices" not in arrays:
            raise bad("the stored interactions lack their indptr or their indices")
        indptr, indices = arrays["user_items_indptr"], arrays["user_items_indices"]
        if (
            indptr.ndim != 1
            or indices.ndim != 1
            or indptr.dtype.kind not in "iu"
            or indices.dtype.kind not in "iu"
            or indptr.shape != (U.shape[0] + 1,)
            or indptr[-1] != len(indices)
        ):
            raise bad("the stored interactions do not match the factor shapes")
        try:  # checks every index against the shapes before anything reads them
            user_items = as_user_items(
                csr_from_arrays(np.ones(len(indices), np.float32), indices, indptr, (U.shape[0], V.shape[0])),
                "the stored interactions",
                require_positive=False,
            )
        except (TypeError, ValueError) as exc:
            raise bad(str(exc)) from None
    # The id maps are optional: files written before they existed load with None.
    ids = {}
    for key, expected in (("user_ids", U.shape[0]), ("item_ids", V.shape[0]), ("item_titles", V.shape[0])):
        if key in arrays:
            try:
                ids[key] = _id_array(arrays[key], key, expected, titles=key == "item_titles")
            except (TypeError, ValueError) as exc:
                raise bad(str(exc)) from None
    epochs_done, seed, history = meta.get("epochs_done", 0), meta.get("seed"), meta.get("history", [])
    if isinstance(epochs_done, bool) or not isinstance(epochs_done, int) or not 0 <= epochs_done <= INT64_MAX:
        raise bad(f"epochs_done is {epochs_done!r}, not a count")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63):
        raise bad(f"seed is {seed!r}, not an integer in [0, 2**63)")
    try:
        if not isinstance(history, list) or not all(isinstance(r, dict) for r in history):
            raise TypeError("not a list of epoch records")
        reports = [EpochReport(**r) for r in history]
        for r in reports:
            str(r)  # every field of the right kind
    except (TypeError, ValueError) as exc:
        raise bad(f"unreadable training history ({exc})") from None
    features = None
    if "features" in meta or any(k in arrays for k in Features.ENTRIES):
        try:
            features = Features.from_arrays(arrays, meta.get("features"), U.shape[0], V.shape[0], model.factors, dtype)
        except (TypeError, ValueError) as exc:
            raise bad(str(exc)) from None
        for label, side in (("users", features.users), ("items", features.items)):
            if side.normalize != bool(model.normalize_features) or (
                side.n_metadata and side.identity != (model.identity in (True, label))
            ):
                raise bad(f"its {label[:-1]} features do not follow its identity/normalize_features settings")
        # The factors are the embeddings' sums: a file whose two disagree is damaged.
        rebuilt = features.representations(bool(model.item_bias))
        tolerance = 1e-4 if dtype == np.float32 else 1e-10
        for name, stored, fresh in zip(("user_factors", "item_factors", "item_bias"), (U, V, b), rebuilt, strict=True):
            if not np.allclose(stored, fresh, rtol=tolerance, atol=tolerance):
                raise bad(f"its {name} are not the sums of its feature embeddings")
        U, V, b = rebuilt
    # Every part is read and checked: only now does the model take them.
    model.user_factors, model.item_factors, model.item_biases = U, V, b
    model._features = features
    model._user_items = user_items
    for key, value in ids.items():
        setattr(model, key, value)
    model._epochs_done, model._seed, model.history_ = epochs_done, seed, reports
    return model


def _id_array(values, name: str, expected: int, *, titles: bool = False) -> np.ndarray:
    """An id map or title array in a pickle-free form, with its length checked.

    Integers become int64 and everything else a fixed-width unicode array, so
    that ``np.load(..., allow_pickle=False)`` reads the file back.

    Parameters
    ----------
    values : array_like
        One entry per row (users) or column (items).
    name : str
        ``"user_ids"``, ``"item_ids"`` or ``"item_titles"``, for messages.
    expected : int
        Required length (the matching factor array's row count).
    titles : bool
        Titles are always stored as strings.

    Returns
    -------
    numpy.ndarray
        1-D int64 or ``<U..`` array.
    """
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    if len(arr) != expected:
        what = "users (rows of user_factors)" if name == "user_ids" else "items (rows of item_factors)"
        raise ValueError(f"{name} has {len(arr)} entries but the model has {expected} {what}")
    if not titles and arr.dtype.kind in "iu":
        if arr.dtype.kind == "u" and len(arr) and arr.max() > np.iinfo(np.int64).max:
            raise ValueError(f"{name} holds integers beyond int64")
        return arr.astype(np.int64)
    if arr.dtype.kind == "b" or (arr.dtype.kind == "f" and not titles):
        raise TypeError(f"{name} must hold integers or strings, got dtype {arr.dtype}")
    if not isinstance(values, np.ndarray) or arr.dtype.kind == "O":
        # numpy's fixed-width strings drop trailing NULs (already in np.asarray of a list): "a" and
        # "a\0" would be one id once saved, so the raw values are looked at.
        ends = [k for k, v in enumerate(values) if isinstance(v, str) and v.endswith("\0")]
        if ends:
            raise ValueError(
                f"{name}[{ends[0]}] ends with a NUL character, which a saved model cannot keep "
                "(it would load as another id)"
            )
    out = arr.astype(str) if arr.dtype.kind != "U" else arr
    if not titles and len(np.unique(out)) != len(out):
        values, counts = np.unique(out, return_counts=True)
        raise ValueError(f"{name} holds {str(values[counts > 1][0])!r} more than once: each id must name one row")
    return out


def _atomic_savez(path: str, arrays: dict) -> None:
    """``np.savez`` to a temporary file beside ``path``, synced, then renamed over it.

    A process killed at any point (even by SIGKILL) leaves ``path`` either as it
    was or complete; at worst a stray ``.bpr_numpy-*.tmp`` file remains beside it.
    The file gets the permissions an ordinary write would give it (:mod:`bpr_numpy._files`).
    """
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".bpr_numpy-", suffix=".tmp", dir=folder)
    try:
        give_ordinary_mode(fd, path)
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, **arrays)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    try:  # make the rename itself durable (a power cut, not only a killed process)
        dir_fd = os.open(folder, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory handles
        return
    try:
        os.fsync(dir_fd)
    except OSError:  # pragma: no cover - file systems that cannot sync a folder
        pass
    finally:
        os.close(dir_fd)
