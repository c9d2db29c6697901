"""Write a tiny Llama-style model directory that vLLM serves with ``--load-format dummy``.

Run with the vLLM venv's Python (it has ``tokenizers``): ``python make_model.py DIR``.
No weights: vLLM fills them with random values, so outputs are deterministic
but meaningless; what the integration test needs is the serving path. The
tokenizer is a byte-level BPE trained here on a fixed text, so the directory
is the same on every machine.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

SPECIALS = ["<|pad|>", "<|begin_of_text|>", "<|end_of_text|>"]
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
CORPUS = [
    "fairserve decides who goes next, where, and who waits, so that every tenant gets its share.",
    "The quick brown fox jumps over the lazy dog. 0123456789 !?.,;:-_()[]{}<>/'\"",
    "user system assistant hello world tokens prompt completion stream usage latency",
] * 50


def tokenizer(vocab_size: int) -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS, trainer)
    return tok


def main(out: Path, vocab_size: int = 2048) -> None:
    out.mkdir(parents=True, exist_ok=True)
    tok = tokenizer(vocab_size)
    tok.save(str(out / "tokenizer.json"))
    size = tok.get_vocab_size()
    ids = {name: tok.token_to_id(name) for name in SPECIALS}
    (out / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": SPECIALS[1], "eos_token": SPECIALS[2], "pad_token": SPECIALS[0],
        "model_max_length": 8192, "chat_template": CHAT_TEMPLATE,
    }))  # fmt: skip
    (out / "config.json").write_text(json.dumps({
        "architectures": ["LlamaForCausalLM"], "model_type": "llama",
        "hidden_size": 1024, "intermediate_size": 2816, "num_hidden_layers": 4,
        "num_attention_heads": 16, "num_key_value_heads": 4, "head_dim": 64,
        "max_position_embeddings": 8192, "vocab_size": size, "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0, "hidden_act": "silu", "tie_word_embeddings": False,
        "torch_dtype": "bfloat16", "bos_token_id": ids[SPECIALS[1]],
        "eos_token_id": ids[SPECIALS[2]], "pad_token_id": ids[SPECIALS[0]],
    }))  # fmt: skip
    (out / "generation_config.json").write_text(json.dumps({
        "bos_token_id": ids[SPECIALS[1]], "eos_token_id": ids[SPECIALS[2]],
    }))  # fmt: skip


if __name__ == "__main__":
    main(Path(sys.argv[1]))
