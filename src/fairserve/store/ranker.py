"""Saving and loading the learned ranking policy's model: one readable JSON file.

The file holds a :class:`~fairserve.core.policies.learned_rank.RankModel`
(weights per feature, offsets per tenant, what training measured) under
``kind: fairserve-learned-ranker``; opening it needs neither scikit-learn nor
a pickle. :func:`load_model` here is the store's one ``load``: it opens a
ranker file and hands every other path to :func:`fairserve.store.models.load_model`.
"""

from __future__ import annotations

import json
from pathlib import Path

from fairserve.core.policies.learned_rank import RankModel
from fairserve.store import models
from fairserve.store.models import ModelNotFound, PathLike

#: The ``kind`` a ranker file names.
RANKER_KIND = "fairserve-learned-ranker"
RANKER_VERSION = 1


def save_ranker(model: RankModel, path: PathLike) -> Path:
    """Write ``model`` as JSON (with its ``kind`` and ``version``); returns the path."""
    out = Path(path)
    if out.parent != Path():
        out.parent.mkdir(parents=True, exist_ok=True)
    data = {"kind": RANKER_KIND, "version": RANKER_VERSION, **model.to_dict()}
    out.write_text(json.dumps(data, indent=2, allow_nan=False) + "\n")
    return out


def load_ranker(path: PathLike) -> RankModel:
    """A ranker written by :func:`save_ranker`; one-line errors naming the file and the key."""
    file = Path(path)
    if not file.is_file():
        raise ModelNotFound(
            f"{file}: no learned ranker here; train one with "
            "`fairserve policy train --trace TRACE --out FILE`"
        )
    data = _read_json(file)
    kind = data.get("kind")
    if kind != RANKER_KIND:
        raise ValueError(f"{file}: key 'kind' must be {RANKER_KIND!r}, got {kind!r}")
    version = data.get("version")
    if version != RANKER_VERSION:
        raise ValueError(f"{file}: key 'version' must be {RANKER_VERSION}, got {version!r}")
    try:
        return RankModel.from_dict(data)
    except ValueError as exc:
        raise ValueError(f"{file}: {exc}") from None


def _read_json(file: Path) -> dict[str, object]:
    try:
        data = json.loads(file.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{file}: not a JSON file ({exc})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{file}: a learned ranker is a JSON object, got {type(data).__name__}")
    return data


def is_ranker_file(path: PathLike) -> bool:
    """Whether ``path`` is a JSON file whose ``kind`` is a ranker's (False for anything else)."""
    file = Path(path)
    if not file.is_file():
        return False
    try:
        data = json.loads(file.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError, OSError):
        return False
    return isinstance(data, dict) and data.get("kind") == RANKER_KIND


def load_model(path: PathLike) -> object:
    """Open any saved fairserve model: a learned ranker, a latency model or a learned predictor."""
    if not Path(path).exists():
        raise ModelNotFound(
            f"{path}: no saved model here (a learned ranker from `fairserve policy train --out "
            "FILE`, a latency model from `fairserve predictor latency --out FILE` or a learned "
            "predictor from `fairserve predictor train --out DIR`)"
        )
    if is_ranker_file(path):
        return load_ranker(path)
    return models.load_model(path)
