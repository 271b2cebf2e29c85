"""Generation metrics (TTFT, inter-token latency, prefill/decode tokens/s, energy per token) from token timestamps.

The agent streams one TokenBlock per generation (protos/agent.proto). The host keeps them with the run's raw
samples as three series, so the store, `host runs export` and reports carry them with no schema of their own:
  - "gen_start"   kind "gen_start":   t = a generation's start,  value = its prompt length in tokens
  - "gen_prefill" kind "gen_prefill": t = its prefill's end,     value = the generation's index
  - "gen_token"   kind "gen_token":   t = each token's ready time, value = the generation's index
Only generations that start inside the MEASURE phase count; warmup generations are kept but not summarised.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from host.analysis import energy, stats
from host.analysis.autocorr import ratio_precision
from host.analysis.distributions import t_two_sided
from host.analysis.document import num
from host.store.rundata import DeviceRaw, Series
from protos import agent_pb2 as pb

TOKEN_KINDS = ("gen_start", "gen_prefill", "gen_token")


class TokenBlockError(ValueError):
    """A TokenBlock whose timestamps cannot describe a generation (out of order, empty, negative)."""


def check_block(block: pb.TokenBlock) -> int:
    """Raise TokenBlockError unless the block is a well-formed generation; returns its sample count."""
    tokens = np.asarray(block.token_end_ns, dtype=np.int64)
    if block.prompt_tokens <= 0:
        raise TokenBlockError(f"a generation with {block.prompt_tokens} prompt tokens")
    if not tokens.size:
        raise TokenBlockError("a generation without tokens")
    if not 0 < block.start_ns <= block.prefill_end_ns <= tokens[0] or np.any(np.diff(tokens) < 0):
        raise TokenBlockError("token timestamps out of order")
    return int(tokens.size) + 2


@dataclass
class TokenSeries:
    """Accumulates TokenBlocks as the three series above."""

    starts: list[int]
    prompts: list[int]
    prefills: list[int]
    token_t: list[np.ndarray]
    token_gen: list[np.ndarray]

    @classmethod
    def empty(cls) -> TokenSeries:
        return cls([], [], [], [], [])

    def add(self, block: pb.TokenBlock) -> None:
        index = len(self.starts)
        self.starts.append(int(block.start_ns))
        self.prompts.append(int(block.prompt_tokens))
        self.prefills.append(int(block.prefill_end_ns))
        tokens = np.asarray(block.token_end_ns, dtype=np.int64)
        self.token_t.append(tokens)
        self.token_gen.append(np.full(tokens.size, index, dtype=np.float64))

    def series(self) -> list[Series]:
        if not self.starts:
            return []
        index = np.arange(len(self.starts), dtype=np.float64)
        return [
            Series(
                "gen_start", "gen_start", t_ns=np.asarray(self.starts, np.int64), value=np.asarray(self.prompts, float)
            ),
            Series("gen_prefill", "gen_prefill", t_ns=np.asarray(self.prefills, np.int64), value=index),
            Series("gen_token", "gen_token", t_ns=np.concatenate(self.token_t), value=np.concatenate(self.token_gen)),
        ]


@dataclass(frozen=True)
class Generation:
    prompt_tokens: int
    start_ns: int
    prefill_end_ns: int
    token_end_ns: np.ndarray

    @property
    def ttft_ns(self) -> int:
        return int(self.token_end_ns[0] - self.start_ns)


def generations(raw: DeviceRaw, phase: str = "measure") -> list[Generation]:
    """The generations whose start lies in a span of the phase (all of them when it has none), in order."""
    by_name = {s.kind: s for s in raw.series if s.kind in TOKEN_KINDS}
    if len(by_name) < len(TOKEN_KINDS):
        return []
    start, prefill, token = by_name["gen_start"], by_name["gen_prefill"], by_name["gen_token"]
    # A worker runs one generation at a time and the parts of a job (--repeat, host ab) one after another, so
    # every prefill end and token belongs to the latest generation that started before it. The index in value
    # restarts in each part, so after the parts' series are merged (host/analysis/repetitions.py) only time tells.
    start_order = np.argsort(start.t_ns, kind="stable")
    start_t, start_prompt = start.t_ns[start_order], start.value[start_order]
    prefill_gen = np.searchsorted(start_t, prefill.t_ns, side="left") - 1
    prefill_by_gen = {int(g): int(t) for g, t in zip(prefill_gen, prefill.t_ns, strict=True) if g >= 0}
    token_order = np.argsort(token.t_ns, kind="stable")
    token_t = token.t_ns[token_order]
    bounds = np.append(np.searchsorted(token_t, start_t, side="right"), token_t.size)
    # Every span of the phase: a run with repetitions (--repeat, host ab) has one measure phase per repetition.
    spans = [(p.start_ns, p.end_ns) for p in raw.phases if p.name == phase]
    found = []
    for index, (start_ns, prompt) in enumerate(zip(start_t.tolist(), start_prompt.tolist(), strict=True)):
        if spans and not any(lo <= start_ns <= (hi or start_ns) for lo, hi in spans):
            continue
        tokens = token_t[bounds[index] : bounds[index + 1]]
        if tokens.size and index in prefill_by_gen:
            found.append(Generation(int(prompt), int(start_ns), int(prefill_by_gen[index]), tokens))
    return found


def spans_ns(raw: DeviceRaw) -> list[tuple[int, int, int]]:
    """(start, first token, last token) of every measured generation: prefill then decode, for plots."""
    return [(g.start_ns, int(g.token_end_ns[0]), int(g.token_end_ns[-1])) for g in generations(raw)]


def _rate(tokens: float, seconds: float) -> float | None:
    return tokens / seconds if seconds > 0 else None


def decode_tokens_per_s(group: Sequence[Generation]) -> float | None:
    """Decoded tokens (each generation's after its first) over the time they took; None with none decoded."""
    decoded = sum(g.token_end_ns.size - 1 for g in group)
    decode_s = sum(int(g.token_end_ns[-1] - g.token_end_ns[0]) for g in group) / 1e9
    return _rate(decoded, decode_s) if decoded else None


def _per(energy_j: float | None, count: float) -> float | None:
    return energy_j / count * 1e3 if energy_j is not None and count > 0 else None


def _tokens_per_j(tokens: float, energy_j: float | None) -> float | None:
    return tokens / energy_j if energy_j is not None and energy_j > 0 else None


def _energy(raw: DeviceRaw, gens: Sequence[Generation], idle_power_w: float | None) -> dict[str, float | None]:
    starts = np.array([g.start_ns for g in gens], dtype=np.int64)
    firsts = np.array([g.token_end_ns[0] for g in gens], dtype=np.int64)
    lasts = np.array([g.token_end_ns[-1] for g in gens], dtype=np.int64)
    prefill_j = energy.windows_energy_j(raw.series, starts, firsts)
    decode_j = energy.windows_energy_j(raw.series, firsts, lasts)
    prompt_tokens = float(sum(g.prompt_tokens for g in gens))
    decoded = float(sum(g.token_end_ns.size - 1 for g in gens))
    generated = float(sum(g.token_end_ns.size for g in gens))
    out: dict[str, float | None] = dict.fromkeys(
        (
            "energy_mj_per_prompt_token",
            "energy_mj_per_generated_token",
            "tokens_per_joule",
            "dynamic_energy_mj_per_prompt_token",
            "dynamic_energy_mj_per_generated_token",
            "dynamic_tokens_per_joule",
            "energy_j_total",
        )
    )
    if prefill_j is None or decode_j is None:
        return out
    prefill_total, decode_total = float(prefill_j.sum()), float(decode_j.sum())
    out["energy_j_total"] = prefill_total + decode_total
    out["energy_mj_per_prompt_token"] = _per(prefill_total, prompt_tokens)
    out["energy_mj_per_generated_token"] = _per(decode_total, decoded)
    out["tokens_per_joule"] = _tokens_per_j(generated, prefill_total + decode_total)
    if idle_power_w is not None:
        prefill_s = float((firsts - starts).sum()) / 1e9
        decode_s = float((lasts - firsts).sum()) / 1e9
        prefill_dyn = prefill_total - idle_power_w * prefill_s
        decode_dyn = decode_total - idle_power_w * decode_s
        out["dynamic_energy_mj_per_prompt_token"] = _per(prefill_dyn, prompt_tokens)
        out["dynamic_energy_mj_per_generated_token"] = _per(decode_dyn, decoded)
        out["dynamic_tokens_per_joule"] = _tokens_per_j(generated, prefill_dyn + decode_dyn)
    return out


def _idle_power_w(raw: DeviceRaw, gens: Sequence[Generation]) -> float | None:
    measure, idle = raw.phase("measure"), raw.phase("idle")
    if measure is None or idle is None:
        return None
    starts = np.array([g.start_ns for g in gens], dtype=np.int64)
    ends = np.array([g.token_end_ns[-1] for g in gens], dtype=np.int64)
    return energy.energy_stats(raw.series, measure, idle, starts, ends).idle_power_w


def decode_rate_ci95(group: Sequence[Generation]) -> list[float] | None:
    """95% interval of decode tokens/s over the generations of one prompt length (within one run).

    decode tokens/s is decoded tokens over decode time, the inverse of the mean inter-token time. A generation's
    tokens share its speed and that speed persists from one generation to the next, so the generation is the
    unit: the ratio decode time / decoded tokens over generations in measurement order, its variance from the
    generations' residuals as a correlated series (host/analysis/autocorr.py), t with that estimate's degrees
    of freedom, inverted. None with fewer generations than show their correlation (autocorr.MIN_VALUES), when
    the correlation outlasts them, or when the interval reaches zero.
    """
    decoded = np.array([g.token_end_ns.size - 1 for g in group], dtype=np.float64)
    decode_s = np.array([(g.token_end_ns[-1] - g.token_end_ns[0]) / 1e9 for g in group])
    if decoded.sum() <= 0 or decode_s.sum() <= 0:
        return None
    precision = ratio_precision(decode_s, decoded)
    if precision.se is None:
        return None
    center_s = float(decode_s.sum() / decoded.sum())
    half = t_two_sided(0.95, precision.df) * precision.se
    return [1.0 / (center_s + half), 1.0 / (center_s - half)] if center_s > half else None


def ttft_ms_by_prompt(raw: DeviceRaw) -> dict[int, np.ndarray]:
    """Each prompt length's measured TTFTs in ms, in measurement order."""
    out: dict[int, list[float]] = {}
    for g in generations(raw):
        out.setdefault(g.prompt_tokens, []).append(g.ttft_ns / 1e6)
    return {k: np.asarray(v) for k, v in out.items()}


def generation_block(raw: DeviceRaw, peak_rss_mb: float | None = None) -> list[dict[str, Any]] | None:
    """The result document's `generation` list (one entry per prompt length), or None without generations."""
    gens = generations(raw)
    if not gens:
        return None
    idle_power_w = _idle_power_w(raw, gens)
    out = []
    for prompt_len in dict.fromkeys(g.prompt_tokens for g in gens):
        group = [g for g in gens if g.prompt_tokens == prompt_len]
        starts = np.array([g.start_ns for g in group], dtype=np.int64)
        firsts = np.array([g.token_end_ns[0] for g in group], dtype=np.int64)
        lasts = np.array([g.token_end_ns[-1] for g in group], dtype=np.int64)
        itl_start = np.concatenate([g.token_end_ns[:-1] for g in group])
        itl_end = np.concatenate([g.token_end_ns[1:] for g in group])
        itl_gen = np.concatenate([np.full(g.token_end_ns.size - 1, i) for i, g in enumerate(group)])
        generated = int(sum(g.token_end_ns.size for g in group))
        entry: dict[str, Any] = {
            "prompt_len": prompt_len,
            "gen_len": int(max(g.token_end_ns.size for g in group)),
            "n_generations": len(group),
            "ttft_ms": stats.latency_stats(starts, firsts).to_dict(),
            # Tokens of one generation share its speed: each generation is one unit of the ITL intervals.
            "itl_ms": stats.latency_stats(itl_start, itl_end, clusters=itl_gen).to_dict() if itl_start.size else None,
            "e2e_ms": stats.latency_stats(starts, lasts).to_dict(),
            "prefill_tokens_per_s": _rate(prompt_len * len(group), float((firsts - starts).sum()) / 1e9),
            "decode_tokens_per_s": decode_tokens_per_s(group),
            "decode_tokens_per_s_ci95": decode_rate_ci95(group),
            "tokens_generated": generated,
            "peak_rss_mb": peak_rss_mb,
        }
        entry.update(_energy(raw, group, idle_power_w))
        out.append(entry)
    return out


def generation_lines(document: dict[str, Any]) -> list[str]:
    """Per device and prompt length, printed after the final table: one set of statistics, labelled.

    The rates are ratios of totals (prefill: prompt tokens over the summed time to first token, so the prompt
    length over the mean TTFT; decode: 1 / the mean inter-token latency), so the line leads with means, which
    agree with them; the medians follow, labelled. It printed "TTFT p50 0.07 ms" beside a prefill rate that
    implied 0.158 ms (the mean).
    """

    lines: list[str] = []
    for device in document.get("devices", []):
        llama = device.get("llama_cpp") or {}
        if llama and device.get("generation"):
            lines.append(f"{device.get('device', '?')}  {llama_cpp_line(llama)}")
        quant = f" {llama['quantization']}" if llama.get("quantization") else ""
        for row in device.get("generation") or []:
            ttft, itl = row.get("ttft_ms") or {}, row.get("itl_ms") or {}
            energy = row.get("energy_mj_per_generated_token")
            lines.append(
                f"{device.get('device', '?')}{quant}  prompt {row['prompt_len']} tokens, {row['gen_len']} generated:"
                f"  means: TTFT {num(ttft.get('mean'))} ms, ITL {num(itl.get('mean'))} ms,"
                f" prefill {num(row.get('prefill_tokens_per_s'))} tok/s,"
                f" decode {num(row.get('decode_tokens_per_s'))} tok/s"
                f"  ·  medians: TTFT {num(ttft.get('p50'))} ms, ITL {num(itl.get('p50'))} ms"
                + (f"  ·  {num(energy)} mJ/generated token" if energy is not None else "")
            )
    return lines


def llama_cpp_line(llama: dict[str, Any]) -> str:
    """A GGUF run's quantization and llama.cpp settings in one line ("GGUF Q8_0 (file_type), n_ctx 4096, ...")."""
    source = llama.get("quantization_source")
    parts = [f"GGUF {llama.get('quantization', '?')}" + (" (guessed from the weights)" if source == "tensors" else "")]
    for key in ("runner", "n_ctx", "n_batch", "n_threads", "n_gpu_layers", "backends"):
        if llama.get(key):
            parts.append(f"{key} {llama[key]}")
    return ", ".join(parts)
