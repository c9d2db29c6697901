"""A model's shape from its Hugging Face ``config.json``: dense, Mixtral-style MoE, DeepSeek MoE + MLA.

Parameter counts are computed from the shapes (embeddings, attention, MLP or
experts, norms, LM head), so a model needs no entry in ``models.yaml``:

- dense (Llama, Mistral, Qwen2): ``num_hidden_layers``, ``hidden_size``,
  ``num_attention_heads``, ``num_key_value_heads``, ``intermediate_size``,
  ``vocab_size``; ``head_dim`` and ``tie_word_embeddings`` when given;
  ``attention_bias`` or the Qwen2 family adds the q/k/v biases.
- Mixtral-style MoE: ``num_local_experts`` experts of ``intermediate_size``,
  ``num_experts_per_tok`` of them active per token.
- DeepSeek-style MoE (``n_routed_experts``): ``moe_intermediate_size``
  experts plus ``n_shared_experts`` always active, the first
  ``first_k_dense_replace`` layers dense; multi-head latent attention when
  ``kv_lora_rank`` is set: the KV cache holds ``kv_lora_rank +
  qk_rope_head_dim`` values per token and layer, replicated on every tp rank.

- GPT-style families with an ungated MLP of two matrices (BLOOM, OPT, Falcon,
  GPT-2, GPT-NeoX, GPT-J, StarCoder, Phi): their own key names (``n_layer``,
  ``n_head``, ``n_embd``, ``ffn_dim`` ...; ``ALIASES``), an MLP of
  ``4 x hidden`` when the config gives no width, embeddings tied unless the
  config says otherwise (Hugging Face's default), Falcon's multi-query or
  grouped KV heads. Their linear-layer biases and learned position
  embeddings (under 0.1% of the parameters) are left out.

MoE: compute follows the active parameters, memory (KV sizing) the total, and
a step reads the routed experts its tokens go to (``num_experts``,
``experts_per_token``, ``expert_params``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fairserve.sim.cost import ModelSpec, UnknownProfileError

DTYPE_BYTES = {"bfloat16": 2, "float16": 2, "float32": 4, "float8_e4m3fn": 1}
REQUIRED = (
    "num_hidden_layers",
    "hidden_size",
    "num_attention_heads",
    "intermediate_size",
    "vocab_size",
)


# Other families' names for the keys read here (the first one present is used).
ALIASES = {
    "num_hidden_layers": ("n_layer", "num_layers", "n_layers"),
    "num_attention_heads": ("n_head", "num_heads"),
    "hidden_size": ("n_embd", "d_model"),
    "intermediate_size": ("ffn_dim", "n_inner", "ffn_hidden_size"),
    "num_key_value_heads": ("num_kv_heads", "n_head_kv"),
    "max_position_embeddings": ("n_positions", "seq_length", "max_sequence_length"),
}
# Model types whose MLP is up and down projections (2 matrices), not gated (3).
UNGATED = frozenset({
    "bloom", "opt", "falcon", "RefinedWeb", "RefinedWebModel", "gpt2", "gpt_neox", "gptj",
    "gpt_bigcode", "starcoder2", "phi",
})  # fmt: skip


def _canonical(cfg: dict[str, Any]) -> dict[str, Any]:
    """``cfg`` with each family's key names mapped to the ones read here."""
    out = dict(cfg)
    for key, names in ALIASES.items():
        if out.get(key) is None:
            found = next((out[n] for n in names if out.get(n) is not None), None)
            if found is not None:
                out[key] = found
    if out.get("model_type") in UNGATED:
        if out.get("intermediate_size") is None and isinstance(out.get("hidden_size"), int):
            out["intermediate_size"] = 4 * out["hidden_size"]
        out.setdefault("tie_word_embeddings", True)
        if out.get("multi_query") and not out.get("new_decoder_architecture"):
            out["num_key_value_heads"] = 1  # Falcon-7B: one KV head shared by all
    return out


def _int(cfg: dict[str, Any], key: str, path: Path, default: int | None = None) -> int:
    value = cfg.get(key, default)
    if value is None:
        raise UnknownProfileError(f"{path}: key {key!r} is missing (a Hugging Face config.json)")
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise UnknownProfileError(f"{path}: key {key!r} must be an integer >= 0, got {value!r}")
    return value


def _attention_params(cfg: dict[str, Any], path: Path) -> tuple[int, int, int, int | None]:
    """(params per layer, query-key head dim, KV heads, latent KV dim or None) of attention."""
    h = _int(cfg, "hidden_size", path)
    heads = _int(cfg, "num_attention_heads", path)
    if cfg.get("kv_lora_rank"):  # multi-head latent attention (DeepSeek-V2/V3)
        lora = _int(cfg, "kv_lora_rank", path)
        rope = _int(cfg, "qk_rope_head_dim", path)
        nope = _int(cfg, "qk_nope_head_dim", path)
        v = _int(cfg, "v_head_dim", path)
        q_rank = cfg.get("q_lora_rank")
        q_dim = heads * (nope + rope)
        q = h * q_dim if not q_rank else h * int(q_rank) + int(q_rank) * q_dim
        kv = h * (lora + rope) + lora * heads * (nope + v)
        norms = lora + (int(q_rank) if q_rank else 0)  # the latents' RMSNorms
        return q + kv + heads * v * h + norms, nope + rope, heads, lora + rope
    head_dim = _int(cfg, "head_dim", path, h // heads)
    kv_heads = _int(cfg, "num_key_value_heads", path, heads)
    q, kv = heads * head_dim, kv_heads * head_dim
    params = h * q + 2 * h * kv + q * h
    if cfg.get("attention_bias") or cfg.get("model_type") == "qwen2":
        params += q + 2 * kv
    return params, head_dim, kv_heads, None


def _mlp_params(cfg: dict[str, Any], path: Path) -> tuple[int, int]:
    """(total, active) MLP parameters over all layers, routers included."""
    h, layers = _int(cfg, "hidden_size", path), _int(cfg, "num_hidden_layers", path)
    matrices = 2 if cfg.get("model_type") in UNGATED else 3
    dense = matrices * h * _int(cfg, "intermediate_size", path)
    if cfg.get("n_routed_experts"):  # DeepSeek MoE
        experts = _int(cfg, "n_routed_experts", path)
        active = _int(cfg, "num_experts_per_tok", path)
        shared = _int(cfg, "n_shared_experts", path, 0)
        expert = 3 * h * _int(cfg, "moe_intermediate_size", path)
        first_dense = _int(cfg, "first_k_dense_replace", path, 0)
        moe_layers = layers - first_dense
        total = first_dense * dense + moe_layers * ((experts + shared) * expert + h * experts)
        act = first_dense * dense + moe_layers * ((active + shared) * expert + h * experts)
        return total, act
    if cfg.get("num_local_experts"):  # Mixtral
        experts = _int(cfg, "num_local_experts", path)
        active = _int(cfg, "num_experts_per_tok", path)
        return layers * (experts * dense + h * experts), layers * (active * dense + h * experts)
    return layers * dense, layers * dense


def _routed_experts(cfg: dict[str, Any], path: Path) -> tuple[int, int, int] | None:
    """(experts per MoE layer, experts per token, routed-expert parameters over all
    layers) of an MoE config; None for a dense one. Shared experts are not routed."""
    h, layers = _int(cfg, "hidden_size", path), _int(cfg, "num_hidden_layers", path)
    if cfg.get("n_routed_experts"):  # DeepSeek MoE
        experts = _int(cfg, "n_routed_experts", path)
        expert = 3 * h * _int(cfg, "moe_intermediate_size", path)
        moe_layers = layers - _int(cfg, "first_k_dense_replace", path, 0)
        return experts, _int(cfg, "num_experts_per_tok", path), moe_layers * experts * expert
    if cfg.get("num_local_experts"):  # Mixtral
        experts = _int(cfg, "num_local_experts", path)
        expert = 3 * h * _int(cfg, "intermediate_size", path)
        return experts, _int(cfg, "num_experts_per_tok", path), layers * experts * expert
    return None


def model_from_config(path: Path, name: str | None = None) -> ModelSpec:
    """The ``ModelSpec`` of a Hugging Face ``config.json``; a clear error names a bad key."""
    try:
        cfg = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise UnknownProfileError(f"cannot read model config {path}: {exc}") from exc
    if not isinstance(cfg, dict):
        raise UnknownProfileError(f"{path}: expected a JSON object (a Hugging Face config.json)")
    cfg = _canonical(cfg)
    for key in REQUIRED:
        _int(cfg, key, path)
    h, layers = cfg["hidden_size"], cfg["num_hidden_layers"]
    vocab, tied = cfg["vocab_size"], bool(cfg.get("tie_word_embeddings", False))
    attention, head_dim, kv_heads, latent = _attention_params(cfg, path)
    mlp_total, mlp_active = _mlp_params(cfg, path)
    norms = layers * 2 * h + h
    embed = vocab * h * (1 if tied else 2)
    total = embed + layers * attention + mlp_total + norms
    active = embed + layers * attention + mlp_active + norms
    dtype = str(cfg.get("torch_dtype") or "bfloat16")
    routed = _routed_experts(cfg, path) if active != total else None
    experts, per_token, expert_params = routed if routed is not None else (None, None, None)
    return ModelSpec(
        name=name or str(cfg.get("_name_or_path") or path.parent.name or path.stem),
        params=total,
        num_layers=layers,
        hidden_size=h,
        num_attention_heads=cfg["num_attention_heads"],
        num_kv_heads=kv_heads,
        head_dim=head_dim,
        intermediate_size=cfg["intermediate_size"],
        vocab_size=vocab,
        tie_word_embeddings=tied,
        max_model_len=_int(cfg, "max_position_embeddings", path, 4096),
        dtype_bytes=DTYPE_BYTES.get(dtype, 2),
        active_params=active if active != total else None,
        kv_latent_dim=latent,
        num_experts=experts,
        experts_per_token=per_token,
        expert_params=expert_params,
    )
