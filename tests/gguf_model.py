"""A tiny random-weight Llama-style model as a GGUF file, written at test time with llama.cpp's own `gguf` writer.

llama.cpp loads it as it would any Llama: the `llama` architecture with its hyperparameters, a SentencePiece
("llama") vocabulary of control tokens, the 256 byte tokens (llama.cpp looks up <0x0A> for the newline when it
loads an SPM vocabulary) and a few words, and per layer the RMS norms, the Q/K/V/output projections and the
gated feed-forward. The weights are random, so the text is nonsense, but every decode step does the real work
of a (small) model. `quant` picks the tensor type of the 2-D weights (F32, F16 or Q8_0, quantized by the gguf
package's reference quantizer), and general.file_type says so, as llama.cpp's own quantizer writes it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

HIDDEN = 64
HEADS = 4
KV_HEADS = 2
FEED_FORWARD = 128
LAYERS = 2
CONTEXT_LENGTH = 512
UNK_ID, BOS_ID, EOS_ID = 0, 1, 2
WORDS = ("▁the", "▁a", "▁model", "▁edge", "▁board", "▁token", "▁power", "▁energy", "▁fast", "▁slow")
#: 3 control tokens + 256 byte tokens + WORDS.
VOCAB = 3 + 256 + len(WORDS)
#: The file types llama.cpp's quantizer records (gguf.LlamaFileType), by the name edgeprof reports.
FILE_TYPES = {"F32": 0, "F16": 1, "Q8_0": 7}


def _vocabulary() -> tuple[list[str], list[float], list[int]]:
    import gguf

    tokens = ["<unk>", "<s>", "</s>"]
    types = [gguf.TokenType.UNKNOWN, gguf.TokenType.CONTROL, gguf.TokenType.CONTROL]
    tokens += [f"<0x{byte:02X}>" for byte in range(256)]
    types += [gguf.TokenType.BYTE] * 256
    tokens += list(WORDS)
    types += [gguf.TokenType.NORMAL] * len(WORDS)
    scores = [0.0] * 3 + [0.0] * 256 + [-float(i) for i in range(len(WORDS))]
    return tokens, scores, [int(t) for t in types]


def write_gguf(
    path: Path,
    quant: str = "Q8_0",
    seed: int = 0,
    layers: int = LAYERS,
    hidden: int = HIDDEN,
    feed_forward: int = FEED_FORWARD,
) -> Path:
    """Write the model to `path` (deterministic for a seed) and return the path.

    `hidden` and `feed_forward` must be multiples of 32 (Q8_0 blocks) and `hidden` of HEADS.
    """
    import gguf

    if quant not in FILE_TYPES:
        raise ValueError(f"quant must be one of {', '.join(FILE_TYPES)}")
    rng = np.random.default_rng(seed)
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("edgeprof tiny llama")
    writer.add_context_length(CONTEXT_LENGTH)
    writer.add_embedding_length(hidden)
    writer.add_block_count(layers)
    writer.add_feed_forward_length(feed_forward)
    writer.add_head_count(HEADS)
    writer.add_head_count_kv(KV_HEADS)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_rope_dimension_count(hidden // HEADS)
    writer.add_vocab_size(VOCAB)
    writer.add_file_type(FILE_TYPES[quant])
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    tokens, scores, types = _vocabulary()
    writer.add_tokenizer_model("llama")
    writer.add_token_list(tokens)
    writer.add_token_scores(scores)
    writer.add_token_types(types)
    writer.add_unk_token_id(UNK_ID)
    writer.add_bos_token_id(BOS_ID)
    writer.add_eos_token_id(EOS_ID)
    writer.add_add_bos_token(True)

    def weight(name: str, rows: int, cols: int) -> None:
        data = (rng.standard_normal((rows, cols)) * 0.08).astype(np.float32)
        if quant == "F32":
            writer.add_tensor(name, data)
        elif quant == "F16":
            writer.add_tensor(name, data.astype(np.float16))
        else:
            kind = gguf.GGMLQuantizationType.Q8_0
            writer.add_tensor(name, gguf.quants.quantize(data, kind), raw_dtype=kind)  # shape from the bytes

    def norm(name: str) -> None:
        writer.add_tensor(name, np.ones(hidden, dtype=np.float32))  # 1-D tensors stay F32, as llama.cpp keeps them

    head_dim = hidden // HEADS
    weight("token_embd.weight", VOCAB, hidden)
    for layer in range(layers):
        prefix = f"blk.{layer}"
        norm(f"{prefix}.attn_norm.weight")
        weight(f"{prefix}.attn_q.weight", hidden, hidden)
        weight(f"{prefix}.attn_k.weight", KV_HEADS * head_dim, hidden)
        weight(f"{prefix}.attn_v.weight", KV_HEADS * head_dim, hidden)
        weight(f"{prefix}.attn_output.weight", hidden, hidden)
        norm(f"{prefix}.ffn_norm.weight")
        weight(f"{prefix}.ffn_gate.weight", feed_forward, hidden)
        weight(f"{prefix}.ffn_up.weight", feed_forward, hidden)
        weight(f"{prefix}.ffn_down.weight", hidden, feed_forward)
    norm("output_norm.weight")
    weight("output.weight", VOCAB, hidden)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
