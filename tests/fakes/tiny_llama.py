"""A tiny Llama model folder that the real `mlx_lm.load` accepts, built locally in about a second.

    path = build_tiny_llama(tmp_path)      # config.json, model.safetensors, tokenizer files
    model, tokenizer = mlx_lm.load(str(path))

Nothing is downloaded: the tokenizer is a byte-level BPE trained with `tokenizers` on a few
sentences, the weights are random numbers from a fixed seed. The text it writes is gibberish, but
greedy decoding is deterministic and two details are hand-set so tests can rely on them:

- the end-of-sequence token can never win: residual dimension 0 holds a large constant for every
  token (no layer writes to it), and only the rows of the (untied) output head for `<|end|>`, the
  other special tokens and non-ASCII byte tokens read it, with a large negative weight. So a
  generation always runs to `max_tokens` (finish "length"), which makes token counts exact and
  cancellation observable, and its text is printable ASCII.
- the chat template is a plain jinja template in tokenizer_config.json, so `apply_chat_template`
  works the way it does for real instruct models.

Use the session fixture `tiny_llama_path` (import it into the test module) to build it once.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

HIDDEN = 48
LAYERS = 2
HEADS = 4
KV_HEADS = 2
INTERMEDIATE = 96
VOCAB = 384
SEED = 20240601

EOS = "<|end|>"
SPECIAL_TOKENS = ["<|begin|>", EOS, "<|system|>", "<|user|>", "<|assistant|>"]

CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "<|{{ message['role'] }}|>\n{{ message['content'] }}<|end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)

CORPUS = [
    "Hello! How are you today? I am your coach and I will help you learn.",
    "Let us practise a new topic: fractions, verbs, loops and functions.",
    "Great answer. Try the next exercise and tell me what you think.",
    "The quick brown fox jumps over the lazy dog 0123456789 times.",
    "Summaries are short; explanations are clear; feedback is kind.",
    '{"answer": "yes", "score": 3, "items": ["a", "b"], "ok": true}',
]


def _train_tokenizer() -> Tokenizer:
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    # The ByteLevel decoder makes mlx-lm pick its BPE streaming detokenizer, as for Llama 3.
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB - 16,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(CORPUS * 4, trainer=trainer)
    assert tokenizer.get_vocab_size() <= VOCAB
    return tokenizer


def _weights(banned: list[int]) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(SEED)
    head_dim = HIDDEN // HEADS

    def rand(*shape: int, scale: float = 0.2) -> np.ndarray:
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    weights: dict[str, np.ndarray] = {}
    embed = rand(VOCAB, HIDDEN, scale=1.0)
    embed[:, 0] = 10.0  # the constant "bias" dimension the output head reads for <|end|>
    weights["model.embed_tokens.weight"] = embed
    for i in range(LAYERS):
        p = f"model.layers.{i}"
        weights[f"{p}.self_attn.q_proj.weight"] = rand(HEADS * head_dim, HIDDEN)
        weights[f"{p}.self_attn.k_proj.weight"] = rand(KV_HEADS * head_dim, HIDDEN)
        weights[f"{p}.self_attn.v_proj.weight"] = rand(KV_HEADS * head_dim, HIDDEN)
        o_proj = rand(HIDDEN, HEADS * head_dim)
        o_proj[0, :] = 0.0  # no layer writes to dimension 0
        weights[f"{p}.self_attn.o_proj.weight"] = o_proj
        weights[f"{p}.mlp.gate_proj.weight"] = rand(INTERMEDIATE, HIDDEN)
        weights[f"{p}.mlp.up_proj.weight"] = rand(INTERMEDIATE, HIDDEN)
        down = rand(HIDDEN, INTERMEDIATE)
        down[0, :] = 0.0
        weights[f"{p}.mlp.down_proj.weight"] = down
        weights[f"{p}.input_layernorm.weight"] = np.ones(HIDDEN, np.float32)
        weights[f"{p}.post_attention_layernorm.weight"] = np.ones(HIDDEN, np.float32)
    weights["model.norm.weight"] = np.ones(HIDDEN, np.float32)
    head = rand(VOCAB, HIDDEN, scale=1.0)
    head[:, 0] = 0.0
    head[banned, 0] = -100.0
    weights["lm_head.weight"] = head
    return weights


def _banned_tokens(tokenizer: Tokenizer) -> list[int]:
    """Tokens the model must never write: special tokens and lone bytes of multi-byte characters.

    Banning the latter keeps the gibberish printable, so streamed deltas are plain text.
    """
    banned = []
    for token, token_id in tokenizer.get_vocab().items():
        text = tokenizer.decode([token_id], skip_special_tokens=False)
        if token in SPECIAL_TOKENS or not text.isascii() or not text.isprintable():
            banned.append(token_id)
    return banned


def build_tiny_llama(directory: Path) -> Path:
    """Write a loadable tiny Llama model into `directory` (created if needed) and return it."""
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer = _train_tokenizer()
    tokenizer.save(str(directory / "tokenizer.json"))
    eos_id = tokenizer.token_to_id(EOS)
    bos_id = tokenizer.token_to_id("<|begin|>")

    config = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": HIDDEN,
        "num_hidden_layers": LAYERS,
        "intermediate_size": INTERMEDIATE,
        "num_attention_heads": HEADS,
        "num_key_value_heads": KV_HEADS,
        "rms_norm_eps": 1e-5,
        "vocab_size": VOCAB,
        "max_position_embeddings": 2048,
        "rope_theta": 10000.0,
        "tie_word_embeddings": False,
        "bos_token_id": bos_id,
        "eos_token_id": eos_id,
        "torch_dtype": "float32",
    }
    (directory / "config.json").write_text(json.dumps(config, indent=2))
    tokenizer_config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": "<|begin|>",
        "eos_token": EOS,
        "pad_token": EOS,
        "add_bos_token": False,
        "model_max_length": 2048,
        "clean_up_tokenization_spaces": False,
        "chat_template": CHAT_TEMPLATE,
    }
    (directory / "tokenizer_config.json").write_text(json.dumps(tokenizer_config, indent=2))
    (directory / "special_tokens_map.json").write_text(
        json.dumps({"bos_token": "<|begin|>", "eos_token": EOS, "pad_token": EOS})
    )
    weights = _weights(_banned_tokens(tokenizer))
    save_file(weights, str(directory / "model.safetensors"), metadata={"format": "mlx"})
    return directory


@pytest.fixture(scope="session")
def tiny_llama_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One tiny model folder per test session."""
    return build_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))
