"""A tiny random-weight Llama-style decoder in the ONNX Runtime GenAI format, built at test time (no downloads).

The graph is a real decoder as far as onnxruntime-genai can tell: token and position embeddings, a few layers
that each project the hidden state to keys and values for `num_heads` heads and append them to the KV cache
(`past_key_values.N.key` in, `present.N.key` out, growing along the sequence axis), single-query attention of
the last position over the whole cache, and logits over a byte-level BPE vocabulary. The end-of-sequence
logit carries a large negative bias so that greedy decoding always runs to the requested length.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

HIDDEN = 32
HEADS = 2
HEAD_SIZE = HIDDEN // HEADS
LAYERS = 2
CONTEXT_LENGTH = 1024
BOS_ID, EOS_ID, PAD_ID = 256, 257, 258
VOCAB = 259


def _byte_unicode() -> dict[int, str]:
    """GPT-2's reversible byte → printable character table (what byte-level BPE vocabularies are spelled in)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    chars = list(printable)
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            chars.append(256 + extra)
            extra += 1
    return {byte: chr(char) for byte, char in zip(printable, chars, strict=True)}


def tokenizer_json() -> dict[str, object]:
    """A byte-level BPE tokenizer in the Hugging Face tokenizers format: every byte one token, no merges."""
    table = _byte_unicode()
    vocab = {table[byte]: byte for byte in range(256)}
    specials = [("<s>", BOS_ID), ("</s>", EOS_ID), ("<pad>", PAD_ID)]
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [
            {
                "id": token_id,
                "content": text,
                "single_word": False,
                "lstrip": False,
                "rstrip": False,
                "normalized": False,
                "special": True,
            }
            for text, token_id in specials
        ],
        "normalizer": None,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True},
        "post_processor": None,
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        "model": {
            "type": "BPE",
            "dropout": None,
            "unk_token": None,
            "continuing_subword_prefix": "",
            "end_of_word_suffix": "",
            "fuse_unk": False,
            "byte_fallback": False,
            "vocab": {**vocab, **{text: token_id for text, token_id in specials}},
            "merges": [],
        },
    }


def tokenizer_config() -> dict[str, object]:
    return {
        "tokenizer_class": "GPT2Tokenizer",
        "bos_token": "<s>",
        "eos_token": "</s>",
        "pad_token": "<pad>",
        "unk_token": None,
        "add_bos_token": False,
        "add_prefix_space": False,
        "model_max_length": CONTEXT_LENGTH,
    }


def genai_config(onnx_filename: str = "model.onnx", layers: int = LAYERS) -> dict[str, object]:
    return {
        "model": {
            "bos_token_id": BOS_ID,
            "context_length": CONTEXT_LENGTH,
            "eos_token_id": EOS_ID,
            "pad_token_id": PAD_ID,
            "type": "llama",
            "vocab_size": VOCAB,
            "decoder": {
                "session_options": {"log_id": "onnxruntime-genai", "provider_options": []},
                "filename": onnx_filename,
                "head_size": HEAD_SIZE,
                "hidden_size": HIDDEN,
                "num_attention_heads": HEADS,
                "num_hidden_layers": layers,
                "num_key_value_heads": HEADS,
                "inputs": {
                    "input_ids": "input_ids",
                    "attention_mask": "attention_mask",
                    "position_ids": "position_ids",
                    "past_key_names": "past_key_values.%d.key",
                    "past_value_names": "past_key_values.%d.value",
                },
                "outputs": {
                    "logits": "logits",
                    "present_key_names": "present.%d.key",
                    "present_value_names": "present.%d.value",
                },
            },
        },
        "search": {
            "diversity_penalty": 0.0,
            "do_sample": False,
            "early_stopping": True,
            "length_penalty": 1.0,
            "max_length": CONTEXT_LENGTH,
            "min_length": 0,
            "no_repeat_ngram_size": 0,
            "num_beams": 1,
            "num_return_sequences": 1,
            "past_present_share_buffer": False,
            "repetition_penalty": 1.0,
            "temperature": 1.0,
            "top_k": 1,
            "top_p": 1.0,
        },
    }


def _const(name: str, array: np.ndarray) -> TensorProto:
    return numpy_helper.from_array(array, name=name)


def decoder_model(seed: int = 0, layers: int = LAYERS) -> onnx.ModelProto:
    """The decoder graph with random float32 weights (deterministic for a seed), `layers` decoder layers."""
    rng = np.random.default_rng(seed)

    def weight(name: str, *shape: int) -> TensorProto:
        return _const(name, (rng.standard_normal(shape) * 0.2).astype(np.float32))

    inits = [
        weight("tok_embed", VOCAB, HIDDEN),
        weight("pos_embed", CONTEXT_LENGTH, HIDDEN),
        weight("lm_head", HIDDEN, VOCAB),
        _const("eos_bias", np.where(np.arange(VOCAB) == EOS_ID, -1e4, 0.0).astype(np.float32)),
        _const("heads_shape", np.array([0, 0, HEADS, HEAD_SIZE], dtype=np.int64)),
        _const("hidden_shape", np.array([0, 0, HIDDEN], dtype=np.int64)),
        _const("last", np.array([-1], dtype=np.int64)),
        _const("big", np.array([2**62], dtype=np.int64)),
        _const("seq_axis", np.array([1], dtype=np.int64)),
        _const("scale", np.array(1.0 / np.sqrt(HEAD_SIZE), dtype=np.float32)),
    ]
    nodes = [
        helper.make_node("Gather", ["tok_embed", "input_ids"], ["tok"]),
        helper.make_node("Gather", ["pos_embed", "position_ids"], ["pos"]),
        helper.make_node("Add", ["tok", "pos"], ["h0"]),
    ]
    graph_inputs = [
        helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "seq"]),
        helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "total_seq"]),
        helper.make_tensor_value_info("position_ids", TensorProto.INT64, ["batch", "seq"]),
    ]
    graph_outputs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", "seq", VOCAB])]
    hidden = "h0"
    for layer in range(layers):
        inits += [weight(f"wq{layer}", HIDDEN, HIDDEN), weight(f"wk{layer}", HIDDEN, HIDDEN)]
        inits += [weight(f"wv{layer}", HIDDEN, HIDDEN), weight(f"wo{layer}", HIDDEN, HIDDEN)]
        for kind in ("key", "value"):
            graph_inputs.append(
                helper.make_tensor_value_info(
                    f"past_key_values.{layer}.{kind}", TensorProto.FLOAT, ["batch", HEADS, "past_seq", HEAD_SIZE]
                )
            )
            graph_outputs.append(
                helper.make_tensor_value_info(
                    f"present.{layer}.{kind}", TensorProto.FLOAT, ["batch", HEADS, "total_seq", HEAD_SIZE]
                )
            )
        p = f"l{layer}_"
        nodes += [
            # new keys/values for every input position: [batch, seq, hidden] → [batch, heads, seq, head_size]
            helper.make_node("MatMul", [hidden, f"wk{layer}"], [p + "k"]),
            helper.make_node("Reshape", [p + "k", "heads_shape"], [p + "k4"]),
            helper.make_node("Transpose", [p + "k4"], [p + "kt"], perm=[0, 2, 1, 3]),
            helper.make_node("Concat", [f"past_key_values.{layer}.key", p + "kt"], [f"present.{layer}.key"], axis=2),
            helper.make_node("MatMul", [hidden, f"wv{layer}"], [p + "v"]),
            helper.make_node("Reshape", [p + "v", "heads_shape"], [p + "v4"]),
            helper.make_node("Transpose", [p + "v4"], [p + "vt"], perm=[0, 2, 1, 3]),
            helper.make_node(
                "Concat", [f"past_key_values.{layer}.value", p + "vt"], [f"present.{layer}.value"], axis=2
            ),
            # the last position's query attends over the whole cache (all any greedy step needs)
            helper.make_node("Slice", [hidden, "last", "big", "seq_axis"], [p + "hl"]),
            helper.make_node("MatMul", [p + "hl", f"wq{layer}"], [p + "q"]),
            helper.make_node("Reshape", [p + "q", "heads_shape"], [p + "q4"]),
            helper.make_node("Transpose", [p + "q4"], [p + "qt"], perm=[0, 2, 1, 3]),
            helper.make_node("Transpose", [f"present.{layer}.key"], [p + "kT"], perm=[0, 1, 3, 2]),
            helper.make_node("MatMul", [p + "qt", p + "kT"], [p + "scores"]),
            helper.make_node("Mul", [p + "scores", "scale"], [p + "scaled"]),
            helper.make_node("Softmax", [p + "scaled"], [p + "probs"], axis=-1),
            helper.make_node("MatMul", [p + "probs", f"present.{layer}.value"], [p + "ctx"]),
            helper.make_node("Transpose", [p + "ctx"], [p + "ctxt"], perm=[0, 2, 1, 3]),
            helper.make_node("Reshape", [p + "ctxt", "hidden_shape"], [p + "ctx3"]),
            helper.make_node("MatMul", [p + "ctx3", f"wo{layer}"], [p + "attn"]),
            helper.make_node("Add", [hidden, p + "attn"], [p + "res"]),
            helper.make_node("Tanh", [p + "res"], [p + "out"]),
        ]
        hidden = p + "out"
    # attention_mask: every position of this batch-1 benchmark is real; fold its sum in at zero weight so the
    # input is consumed (onnxruntime-genai feeds it and ORT keeps the graph honest about using it)
    inits.append(_const("zero", np.array(0.0, dtype=np.float32)))
    nodes += [
        helper.make_node("MatMul", [hidden, "lm_head"], ["raw_logits"]),
        helper.make_node("Add", ["raw_logits", "eos_bias"], ["biased"]),
        helper.make_node("ReduceSum", ["attention_mask"], ["mask_sum"], keepdims=0),
        helper.make_node("Cast", ["mask_sum"], ["mask_sum_f"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["mask_sum_f", "zero"], ["mask_zero"]),
        helper.make_node("Add", ["biased", "mask_zero"], ["logits"]),
    ]
    graph = helper.make_graph(nodes, "tiny_genai_decoder", graph_inputs, graph_outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="edgeprof-tests")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def write_genai_dir(directory: Path, seed: int = 0, layers: int = LAYERS) -> Path:
    """Write a complete GenAI model directory (config, decoder, tokenizer) and return it; more `layers`, slower."""
    directory.mkdir(parents=True, exist_ok=True)
    onnx.save(decoder_model(seed, layers), directory / "model.onnx")
    (directory / "genai_config.json").write_text(json.dumps(genai_config(layers=layers), indent=2))
    (directory / "tokenizer.json").write_text(json.dumps(tokenizer_json(), ensure_ascii=False))
    (directory / "tokenizer_config.json").write_text(json.dumps(tokenizer_config(), indent=2))
    return directory
