"""hush for notebooks: the offline flows of the ``hush`` command line.

Extraction with a consent ledger (or from research data), DP training and
its non-private twin, evaluation, sweeps, model inspection and offline
recommendations. Every flow runs the same Rust code as the command line
(``hush-pipeline``): the same consent rules, the same budget claims on the
store, the same DP noise. Inputs are file paths, pandas DataFrames or
pyarrow Tables; results are dicts, DataFrames and numpy arrays. Errors raise
``hush.HushError`` (or a subclass) with the command line's message.

    import hush
    hush.synth("shop", subjects=300, items=60, format="movielens-csv")
    data = hush.extract("shop/ratings.csv", format="movielens-csv",
                        research_data=True, feedback="explicit")
    model = hush.train(data, epsilon=4.0, split="holdout:0.2:42")
    model.metrics["rmse"], model.item_factors.shape
"""

from __future__ import annotations

import datetime as _dt
import math as _math
import os as _os
from typing import Any, Iterable, Optional, Sequence, Union

import pandas as _pd

from . import _hush
from ._hush import (
    BudgetError,
    FeatureSet,
    FileError,
    HushError,
    InputError,
    Model,
    ModelError,
    StoreError,
)

__version__ = _hush.__version__

__all__ = [
    "BudgetError",
    "FeatureSet",
    "FileError",
    "HushError",
    "InputError",
    "Model",
    "ModelError",
    "StoreError",
    "card",
    "dump",
    "evaluate",
    "evaluation_table",
    "extract",
    "inspect",
    "load_features",
    "load_model",
    "recommend",
    "sweep",
    "synth",
    "train",
]

PathLike = Union[str, "_os.PathLike[str]"]


def _path(value: Optional[PathLike]) -> Optional[str]:
    return None if value is None else _os.fspath(value)


def _text(value: Any) -> str:
    """One cell as the text a CSV file would hold; a missing cell is empty."""
    if value is None:
        return ""
    if isinstance(value, float) and _math.isnan(value):
        return ""
    if value is _pd.NaT or value is _pd.NA:
        return ""
    if isinstance(value, _dt.datetime):
        # A timestamp without a zone is taken as UTC, as hush's files are.
        if value.tzinfo is None:
            value = value.replace(tzinfo=_dt.timezone.utc)
        return value.isoformat()
    if isinstance(value, bytes):
        return value.decode("utf-8")
    return str(value)


def _table(events: Any, label: str) -> tuple:
    """A DataFrame or an Arrow table as ``(label, [(column, [text, ...]), ...])``."""
    if isinstance(events, _pd.DataFrame):
        columns = [(str(name), [_text(v) for v in events[name].tolist()]) for name in events.columns]
        return (label, columns)
    if hasattr(events, "column_names") and hasattr(events, "column"):
        columns = [
            (str(name), [_text(v) for v in events.column(name).to_pylist()]) for name in events.column_names
        ]
        return (label, columns)
    raise InputError(f"{label}: expected a file path, a pandas DataFrame or a pyarrow Table, found {type(events).__name__}")


def _inputs(events: Any) -> list:
    if isinstance(events, (list, tuple)):
        items = list(events)
    else:
        items = [events]
    inputs = []
    for n, item in enumerate(items):
        if isinstance(item, (str, _os.PathLike)):
            inputs.append(_os.fspath(item))
        elif isinstance(item, _pd.DataFrame):
            inputs.append(_table(item, "<DataFrame>" if len(items) == 1 else f"<DataFrame {n}>"))
        else:
            inputs.append(_table(item, "<Arrow table>" if len(items) == 1 else f"<Arrow table {n}>"))
    return inputs


def _settings(settings: dict) -> Optional[dict]:
    clean = {k: (_os.fspath(v) if isinstance(v, _os.PathLike) else v) for k, v in settings.items()}
    return clean or None


def _features(data: Union[FeatureSet, PathLike]) -> FeatureSet:
    if isinstance(data, FeatureSet):
        return data
    return FeatureSet.load(_os.fspath(data))


def _model(model: Union[Model, PathLike]) -> Model:
    if isinstance(model, Model):
        return model
    return Model.load(_os.fspath(model))


def synth(
    out: PathLike,
    *,
    subjects: Optional[int] = None,
    items: Optional[int] = None,
    mean_events: Optional[float] = None,
    rank: Optional[int] = None,
    seed: Optional[int] = None,
    format: str = "csv",
) -> dict:
    """Writes a synthetic storefront into ``out`` as ``hush synth`` does; returns its summary.

    ``format`` is ``csv`` or ``jsonl`` (events, consent records, catalogue,
    erasure requests) or ``movielens-csv`` (``ratings.csv``, research data).
    """
    return _hush.synth(
        _os.fspath(out), subjects=subjects, items=items, mean_events=mean_events, rank=rank, seed=seed, format=format
    )


def extract(
    events: Any = (),
    *,
    format: Optional[str] = None,
    mapping: Optional[str] = None,
    config: Optional[PathLike] = None,
    store: Optional[str] = None,
    key_file: Optional[PathLike] = None,
    from_store: bool = False,
    out: Optional[PathLike] = None,
    **settings: Any,
) -> FeatureSet:
    """Consent-filtered extraction, as ``hush extract``.

    ``events``: a file path, a pandas DataFrame, a pyarrow Table, or a list of
    them. Tables are read as a CSV file with a header would be: the columns
    ``subject_id, item_id, kind, value, timestamp`` (``kind`` and ``value``
    optional), or those named by ``mapping`` (as ``--mapping``). Files are
    read in ``format`` (``csv``, ``jsonl``, ``parquet``, ``dat``, ``udata``,
    ``movielens-csv``), by default the one their extension names
    (``.parquet``, ``.jsonl``, ``.dat``; anything else CSV). A malformed
    row raises ``InputError`` naming its row (from 1) and field in strict
    mode, and counts against ``max_malformed_fraction`` otherwise.

    Consented data needs ``store`` (the ledger, e.g. ``"hush.db"``, with its
    ``hush.key`` beside it or ``key_file``); ``research_data=True`` reads
    files without a ledger and marks everything made from them research-only.

    ``settings`` override the config's ``[extract]`` table by name:
    ``snapshot_at``, ``policy``, ``feedback``, ``retention_days``,
    ``max_events_per_subject``, ``sampling_seed``, ``catalogue``,
    ``kind_weights``, ``rating_positive_threshold``, ``strict``,
    ``max_malformed_fraction``, ``research_data``.
    """
    fs = _hush.extract(
        _inputs(events) if not (isinstance(events, tuple) and not events) else [],
        format=format,
        mapping=mapping,
        config=_path(config),
        store=store,
        key_file=_path(key_file),
        use_store=from_store,
        settings=_settings(settings),
    )
    if out is not None:
        fs.save(_os.fspath(out))
    return fs


def load_features(path: PathLike) -> FeatureSet:
    """Loads a feature set file (``.hfs``) and the report beside it."""
    return FeatureSet.load(_os.fspath(path))


def train(
    data: Union[FeatureSet, PathLike],
    *,
    epsilon: Optional[float] = None,
    delta: float = 1e-6,
    non_private: bool = False,
    noise_seed: Optional[int] = None,
    split: Optional[str] = None,
    purpose: Optional[str] = None,
    config: Optional[PathLike] = None,
    params: Optional[dict] = None,
    store: Optional[str] = None,
    key_file: Optional[PathLike] = None,
    out: Optional[PathLike] = None,
    force: bool = False,
) -> Model:
    """Trains as ``hush train``: DP under ``epsilon``/``delta`` or the twin (``non_private=True``).

    With ``split`` (``holdout:FRACTION:SEED`` or ``temporal:FRACTION``) the
    model trains on the train part and ``model.metrics`` holds its
    evaluation. Data from a store spends that store's budget (give
    ``store``), exactly as the command line; research data spends none and
    its models are never releasable. ``params`` overrides ``[train]``
    settings by name (``rank``, ``iterations``, ``lambda``, ...). With
    ``out`` the model and its card are written (``force`` to replace).
    The GIL is released while training.
    """
    return _hush.train(
        _features(data),
        epsilon=epsilon,
        delta=delta,
        non_private=non_private,
        noise_seed=noise_seed,
        split=split,
        purpose=purpose,
        config=_path(config),
        settings=params,
        store=store,
        key_file=_path(key_file),
        out=_path(out),
        force=force,
    )


def evaluate(
    data: Union[FeatureSet, PathLike],
    *,
    split: str = "holdout:0.2:42",
    model: Optional[PathLike] = None,
    epsilon: Optional[float] = None,
    delta: float = 1e-6,
    non_private: bool = False,
    noise_seed: Optional[int] = None,
    k: int = 10,
    validation: Optional[str] = None,
    config: Optional[PathLike] = None,
    params: Optional[dict] = None,
    store: Optional[str] = None,
    key_file: Optional[PathLike] = None,
    write_split: Optional[PathLike] = None,
    split_format: str = "csv",
) -> dict:
    """Evaluates as ``hush evaluate --json``: the metrics dict (exact, private).

    Trains on the split's train part (DP or twin) unless ``model`` names a
    model file to evaluate. ``evaluation_table(metrics)`` gives the audit by
    subject activity and item popularity as a DataFrame. ``write_split``
    names a directory for the two parts (``train``/``test``, as
    ``split_format`` ``"csv"`` or ``"parquet"``).
    """
    return _hush.evaluate(
        _features(data),
        split=split,
        model=_path(model),
        epsilon=epsilon,
        delta=delta,
        non_private=non_private,
        noise_seed=noise_seed,
        k=k,
        validation=validation,
        config=_path(config),
        settings=params,
        store=store,
        key_file=_path(key_file),
        write_split=_path(write_split),
        split_format=split_format,
    )


def evaluation_table(metrics: dict) -> _pd.DataFrame:
    """The per-group audit of an evaluation (``by_activity``, ``by_item_popularity``) as a DataFrame."""
    rows = []
    for breakdown in ("by_activity", "by_item_popularity"):
        for group, values in (metrics.get(breakdown) or {}).items():
            rows.append({"breakdown": breakdown, "group": group, **values})
    return _pd.DataFrame(rows, columns=["breakdown", "group", "recall", "ndcg", "rmse", "subjects"])


def sweep(
    data: Union[FeatureSet, PathLike],
    out: PathLike,
    *,
    epsilons: Sequence[float] = (0.5, 1.0, 2.0, 4.0, 8.0, 16.0),
    seeds: int = 5,
    delta: float = 1e-6,
    split: str = "holdout:0.2:42",
    k: int = 10,
    tolerance: float = 0.05,
    fresh: bool = False,
    name: str = "sweep",
    config: Optional[PathLike] = None,
    params: Optional[dict] = None,
    store: Optional[str] = None,
    key_file: Optional[PathLike] = None,
) -> dict:
    """Sweeps as ``hush sweep``: every epsilon and seed, the twin, the baselines.

    Writes ``results.json``, ``results.csv`` and ``report.html`` into
    ``out`` (resuming finished cells unless ``fresh``) and returns the
    results dict, with ``table``: one DataFrame row per cell.
    """
    results = _hush.sweep(
        _features(data),
        _os.fspath(out),
        epsilons=[float(e) for e in epsilons],
        seeds=seeds,
        delta=delta,
        split=split,
        k=k,
        tolerance=tolerance,
        fresh=fresh,
        name=name,
        config=_path(config),
        settings=params,
        store=store,
        key_file=_path(key_file),
    )
    rows = []
    for cell in results.get("cells", []):
        row = {key: cell.get(key) for key in ("arm", "epsilon", "seed", "achieved_epsilon", "rho")}
        row.update(cell.get("metrics", {}))
        rows.append(row)
    results["table"] = _pd.DataFrame(rows)
    return results


def load_model(path: PathLike) -> Model:
    """Loads a model file (``.hmdl``)."""
    return Model.load(_os.fspath(path))


def inspect(model: Union[Model, PathLike]) -> dict:
    """``hush model inspect --json``: the model's metadata and shape."""
    return _model(model).inspect()


def dump(model: Union[Model, PathLike]) -> dict:
    """``hush model dump``: every released array; ``item_factors`` is a numpy array (items x rank)."""
    return _model(model).dump()


def card(model: Union[Model, PathLike], *, html: bool = False) -> str:
    """The model card, as Markdown or self-contained HTML."""
    return _model(model).card(html=html)


def recommend(
    model: Union[Model, PathLike],
    items: Iterable[str],
    *,
    values: Optional[Sequence[float]] = None,
    k: int = 10,
) -> _pd.DataFrame:
    """Offline recommendations for a history of item ids, as ``hush recommend``.

    Returns a DataFrame (``rank``, ``item``, ``score``); its ``attrs`` hold
    ``unknown_items`` (ignored history items) and ``personalized`` (False
    when no history item is known and the list is the popular fallback).
    """
    found = _model(model).recommend(
        [str(i) for i in items], values=None if values is None else [float(v) for v in values], k=k
    )
    frame = _pd.DataFrame(
        [(n + 1, item, score) for n, (item, score) in enumerate(found["items"])],
        columns=["rank", "item", "score"],
    )
    frame.attrs["unknown_items"] = found["unknown_items"]
    frame.attrs["personalized"] = found["personalized"]
    return frame
