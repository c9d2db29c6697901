"""Model shapes from Hugging Face config.json files: dense, Mixtral MoE, DeepSeek MoE with MLA."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from fairserve.sim.cost import CostModel, UnknownProfileError, gpu_spec, model_spec
from fairserve.sim.hf_config import model_from_config

LLAMA_2_7B = {
    "model_type": "llama", "num_hidden_layers": 32, "hidden_size": 4096,
    "num_attention_heads": 32, "num_key_value_heads": 32, "intermediate_size": 11008,
    "vocab_size": 32000, "max_position_embeddings": 4096, "torch_dtype": "float16",
}  # fmt: skip
MIXTRAL_8X7B = {
    "model_type": "mixtral", "num_hidden_layers": 32, "hidden_size": 4096,
    "num_attention_heads": 32, "num_key_value_heads": 8, "intermediate_size": 14336,
    "vocab_size": 32000, "max_position_embeddings": 32768, "num_local_experts": 8,
    "num_experts_per_tok": 2, "torch_dtype": "bfloat16",
}  # fmt: skip
DEEPSEEK_V2_LITE = {
    "model_type": "deepseek_v2", "num_hidden_layers": 27, "hidden_size": 2048,
    "num_attention_heads": 16, "num_key_value_heads": 16, "intermediate_size": 10944,
    "moe_intermediate_size": 1408, "n_routed_experts": 64, "n_shared_experts": 2,
    "num_experts_per_tok": 6, "first_k_dense_replace": 1, "kv_lora_rank": 512,
    "q_lora_rank": None, "qk_nope_head_dim": 128, "qk_rope_head_dim": 64, "v_head_dim": 128,
    "vocab_size": 102400, "max_position_embeddings": 163840, "torch_dtype": "bfloat16",
}  # fmt: skip


def write(tmp_path: Path, cfg: dict[str, Any]) -> Path:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(cfg))
    return path


def test_dense_parameter_count_matches_the_model_card(tmp_path: Path) -> None:
    spec = model_from_config(write(tmp_path, LLAMA_2_7B), "Llama-2-7B")
    assert spec.params == 6_738_415_616  # meta-llama/Llama-2-7b-hf, safetensors total
    assert spec.active_params is None and spec.head_dim == 128 and spec.dtype_bytes == 2
    assert spec == model_spec("Llama-2-7B")  # the catalogue entry is this config


def test_mixtral_total_and_active_parameters(tmp_path: Path) -> None:
    spec = model_from_config(write(tmp_path, MIXTRAL_8X7B))
    assert spec.params == 46_702_792_704  # mistralai/Mixtral-8x7B-v0.1
    assert spec.active_params == 12_879_925_248  # two of eight experts per token
    # Compute follows the active parameters, memory the total: against the same
    # model with every expert active, a long prefill is faster and the KV cache
    # the same size.
    every = model_from_config(write(tmp_path, {**MIXTRAL_8X7B, "num_experts_per_tok": 8}))
    assert every.params == spec.params and every.active_params is None
    h100 = gpu_spec("H100-80GB")
    moe, full = CostModel(h100, spec, 2), CostModel(h100, every, 2)
    pairs = 8192 * 8193 // 2
    t_moe = moe.step_time_s(8192, 0, 8192, pairs, 1, 1)
    t_full = full.step_time_s(8192, 0, 8192, pairs, 1, 1)
    assert t_moe < 0.5 * t_full
    assert moe.kv_cache_blocks(16, 0.9, 8192, 256) == full.kv_cache_blocks(16, 0.9, 8192, 256)


def test_deepseek_moe_with_latent_attention(tmp_path: Path) -> None:
    spec = model_from_config(write(tmp_path, DEEPSEEK_V2_LITE))
    assert spec.params == 15_706_484_224  # deepseek-ai/DeepSeek-V2-Lite
    assert spec.active_params is not None and spec.active_params < spec.params / 5
    # The cache holds the 512-value latent and the 64-value rotary key per layer,
    # the same on every tp rank.
    assert spec.kv_bytes_per_token(1) == spec.kv_bytes_per_token(8) == 27 * (512 + 64) * 2


def test_a_config_path_works_where_a_model_name_does(tmp_path: Path) -> None:
    path = write(tmp_path, LLAMA_2_7B)
    assert model_spec(str(path)).params == 6_738_415_616


def test_bad_config_names_the_key(tmp_path: Path) -> None:
    with pytest.raises(UnknownProfileError, match=r"config\.json: key 'hidden_size' is missing"):
        model_from_config(
            write(tmp_path, {k: v for k, v in LLAMA_2_7B.items() if k != "hidden_size"})
        )
    with pytest.raises(UnknownProfileError, match="must be an integer"):
        model_from_config(write(tmp_path, {**LLAMA_2_7B, "vocab_size": "many"}))


BLOOM_176B = {
    "model_type": "bloom", "n_layer": 70, "n_head": 112, "hidden_size": 14336,
    "vocab_size": 250880, "seq_length": 2048, "torch_dtype": "bfloat16",
}  # fmt: skip
OPT_66B = {
    "model_type": "opt", "num_hidden_layers": 64, "num_attention_heads": 72,
    "hidden_size": 9216, "ffn_dim": 36864, "vocab_size": 50272,
    "max_position_embeddings": 2048, "torch_dtype": "float16",
}  # fmt: skip
FALCON_7B = {
    "model_type": "falcon", "num_hidden_layers": 32, "num_attention_heads": 71,
    "hidden_size": 4544, "vocab_size": 65024, "multi_query": True, "parallel_attn": True,
}  # fmt: skip


@pytest.mark.parametrize(
    ("cfg", "billions"), [(BLOOM_176B, 176.2), (OPT_66B, 65.7)]
)  # fmt: skip
def test_gpt_style_families_read_with_their_own_key_names(
    tmp_path: Path, cfg: dict[str, Any], billions: float
) -> None:
    # Ungated MLPs (two matrices of hidden x 4 hidden), tied embeddings by default:
    # the model cards' parameter counts.
    model = model_from_config(write(tmp_path, cfg))
    assert model.params / 1e9 == pytest.approx(billions, rel=0.005)
    assert model.tie_word_embeddings and model.max_model_len == 2048
    assert model.num_kv_heads == model.num_attention_heads  # plain multi-head attention


def test_falcon_multi_query_has_one_kv_head(tmp_path: Path) -> None:
    model = model_from_config(write(tmp_path, FALCON_7B))
    assert (model.num_kv_heads, model.head_dim, model.intermediate_size) == (1, 64, 4 * 4544)
    # One KV head: the cache per token is 1/71 of multi-head attention's.
    assert model.kv_bytes_per_token(1) == 2 * 32 * 64 * 2
