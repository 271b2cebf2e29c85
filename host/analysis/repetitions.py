"""Repetitions (`--repeat K`, `host ab`): each part of a multi-part job summarised, and the pooled device entry.

The contract (DESIGN.md §4), read by compare and the reports: a device entry measured in K repetitions has
``repetitions``, a list in measurement order, one object per repetition with

    index, part, n, p50_ms, p90_ms, mean_ms, throughput_ips, duration_s,
    energy_mj_per_inference, dynamic_energy_mj_per_inference, idle_power_w, avg_power_w,
    load_time_ms, worker_pid, measure_start_ns, measure_end_ns, idle_start_ns, idle_end_ns

(energy fields null without a power sensor; ``part`` is the index in the agent job, ``index`` in this run), and
for a generative model ``generation``: per prompt length ``prompt_len, n_generations, ttft_p50_ms,
decode_tokens_per_s, prefill_tokens_per_s``.
The run's raw latency arrays are the repetitions' measured inferences concatenated in this order, so
``n`` gives the boundaries; the raw series cover every repetition's span. The entry's top-level figures
are pooled over all repetitions (`pool`): percentiles over every inference, throughput and energy as
totals over the measured time, and intervals that include the spread BETWEEN repetitions once there are at
least two: latency with the repetitions as units (a t interval on their log quantiles and the pooled share's
spread; host/analysis/intervals.py pooled_quantile_interval), energy and decode rate by a Student-t interval
over the repetitions' own values. Both are exact for normal run-level figures at any K >= 2 (K=3: 2 df).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from host.analysis import energy, stats
from host.analysis.generation import generation_block, ttft_ms_by_prompt
from host.store.rundata import DeviceRaw
from protos import agent_pb2 as pb


def repetition_summary(
    index: int, part: int, raw: DeviceRaw, info: pb.JobInfo | None, in_blocks: bool = False
) -> dict[str, Any]:
    """One repetition's figures from its own inferences and samples (``in_blocks``: a phone's runner blocks)."""
    rep: dict[str, Any] = {
        "index": index,
        "part": part,
        "n": int(raw.start_ns.size),
        "p50_ms": None,
        "p90_ms": None,
        "mean_ms": None,
        "throughput_ips": None,
        "duration_s": None,
        "energy_mj_per_inference": None,
        "dynamic_energy_mj_per_inference": None,
        "idle_power_w": None,
        "avg_power_w": None,
        "load_time_ms": info.load_time_ns / 1e6 if info is not None else None,
        "worker_pid": int(info.worker_pid) if info is not None and info.worker_pid else None,
    }
    measure, idle = raw.phase("measure"), raw.phase("idle")
    rep["measure_start_ns"] = measure.start_ns if measure else None
    rep["measure_end_ns"] = measure.end_ns if measure else None
    rep["idle_start_ns"] = idle.start_ns if idle else None
    rep["idle_end_ns"] = idle.end_ns if idle else None
    if raw.start_ns.size:
        lat = stats.latency_stats(raw.start_ns, raw.end_ns)
        rep.update(
            p50_ms=lat.p50_ms,
            p90_ms=lat.p90_ms,
            mean_ms=lat.mean_ms,
            throughput_ips=lat.throughput_ips,
            duration_s=lat.duration_s,
        )
        if measure is not None and measure.end_ns:
            e = energy.energy_stats(raw.series, measure, idle, raw.start_ns, raw.end_ns, in_blocks=in_blocks)
            rep.update(
                energy_mj_per_inference=e.energy_mj_per_inference,
                dynamic_energy_mj_per_inference=e.dynamic_energy_mj_per_inference,
                idle_power_w=e.idle_power_w,
                avg_power_w=e.avg_power_w,
            )
    generation = generation_block(raw)
    if generation is not None:  # a generative model: each prompt length's run-level figures, for compare
        rep["generation"] = [
            {
                "prompt_len": row["prompt_len"],
                "n_generations": row["n_generations"],
                "ttft_p50_ms": (row.get("ttft_ms") or {}).get("p50"),
                "decode_tokens_per_s": row["decode_tokens_per_s"],
                "prefill_tokens_per_s": row["prefill_tokens_per_s"],
            }
            for row in generation
        ]
    return rep


def _pool_generation(entry: dict[str, Any], reps: list[dict[str, Any]], parts: list[DeviceRaw]) -> None:
    """A generative entry's TTFT p50 and decode tokens/s intervals over its repetitions (in place)."""
    by_prompt = [ttft_ms_by_prompt(p) for p in parts]
    for row in entry.get("generation") or []:
        prompt = row["prompt_len"]
        pooled = stats.pooled_quantile_interval([g[prompt] for g in by_prompt if prompt in g], 0.5)
        if row.get("ttft_ms") and pooled.as_ci95() is not None:
            row["ttft_ms"]["p50_ci95"] = pooled.as_list()
            row["ttft_ms"]["ci_method"] = pooled.method
        rates = [
            g["decode_tokens_per_s"]
            for r in reps
            for g in r.get("generation") or []
            if g["prompt_len"] == prompt and g["decode_tokens_per_s"] is not None
        ]
        center = row.get("decode_tokens_per_s")
        if center is not None and len(rates) == len(reps) >= 2:
            low, high = stats.batch_means_ci95(np.asarray(rates), center=center)
            row["decode_tokens_per_s_ci95"] = [max(low, 0.0), high]


def merge_raw(device: str, parts: list[DeviceRaw]) -> DeviceRaw:
    """The repetitions of one run as one DeviceRaw: inferences concatenated in order, series merged by name."""
    merged = DeviceRaw(device=device)
    if not parts:
        return merged
    merged.start_ns = np.concatenate([p.start_ns for p in parts])
    merged.end_ns = np.concatenate([p.end_ns for p in parts])
    merged.warmup_start_ns = np.concatenate([p.warmup_start_ns for p in parts])
    merged.warmup_end_ns = np.concatenate([p.warmup_end_ns for p in parts])
    by_name: dict[str, list[Any]] = {}
    for part in parts:
        for s in part.series:
            by_name.setdefault(s.name, []).append(s)
    for chunks in by_name.values():
        first = chunks[0]
        t_ns = np.concatenate([c.t_ns for c in chunks])
        order = np.argsort(t_ns, kind="stable")
        value = np.concatenate([c.value for c in chunks])[order]
        merged.series.append(type(first)(first.name, first.kind, first.role, first.sensor, t_ns[order], value))
    merged.phases = [span for part in parts for span in part.phases]
    return merged


def _weighted(reps: list[dict[str, Any]], key: str) -> float | None:
    """Σ n·x / Σ n over repetitions that have x: a per-inference figure as a total over all inferences."""
    pairs = [(r["n"], r[key]) for r in reps if r.get(key) is not None and r["n"]]
    if not pairs or len(pairs) < len(reps):
        return None
    return sum(n * x for n, x in pairs) / sum(n for n, _ in pairs)


def _between_ci95(
    reps: list[dict[str, Any]], key: str, center: float | None, floor: float | None = None
) -> list[float] | None:
    """Student-t interval over the repetitions' values of ``key``; ``floor`` clips a bound no figure can cross."""
    values = [r[key] for r in reps if r.get(key) is not None]
    if center is None or len(values) < 2 or len(values) < len(reps):
        return None
    low, high = stats.batch_means_ci95(np.asarray(values, dtype=np.float64), center=center)
    return [low if floor is None else max(low, floor), high]


def pool(entry: dict[str, Any], reps: list[dict[str, Any]], parts: list[DeviceRaw]) -> None:
    """Replace the entry's top-level figures by figures pooled over its repetitions (in place).

    Latency percentiles stay those of all inferences together (device_entry computed them); throughput is
    all inferences over the summed measured time (not over the gaps between repetitions); energy per
    inference is total energy over total inferences. With two or more repetitions every interval includes
    the between-repetition spread (see the module docstring), which is what a comparison must beat. thermal
    is the hottest repetition, throttled if any was.
    """
    entry["repetitions"] = reps
    if len(reps) < 2:
        return
    total_n = sum(r["n"] for r in reps)
    durations = [r["duration_s"] for r in reps if r["duration_s"]]
    entry["duration_s"] = sum(durations) if durations else None
    entry["throughput_ips"] = total_n / entry["duration_s"] if entry["duration_s"] else None
    latency = entry.get("latency_ms")
    if latency:
        # The repetitions are the units (host/analysis/intervals.py): run-to-run shifts are in the interval.
        groups = [p.latency_ns.astype(np.float64) / 1e6 for p in parts]
        for key, q in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99)):
            if latency.get(key) is None:  # block means have no per-inference tails
                continue
            pooled = stats.pooled_quantile_interval(groups, q)
            latency[f"{key}_ci95"] = pooled.as_list() if pooled.as_ci95() is not None else None
            latency[f"{key}_ci"] = pooled.as_list()
            latency[f"{key}_ci_coverage"] = pooled.coverage
        latency["ci_method"] = stats.pooled_quantile_interval(groups, 0.5).method
        latency["ci_assumes"] = None
        latency["estimates"] = (
            f"{latency['estimates']}; intervals over {len(reps)} repetitions (run-to-run shifts included)"
            if latency.get("p90") is None and latency.get("estimates")
            else f"percentiles of all {len(reps)} repetitions' inferences; intervals over the repetitions"
            " (run-to-run shifts included)"
        )
    _pool_generation(entry, reps, parts)
    if total_n:
        e = dict(entry.get("energy") or energy.empty())
        gross = _weighted(reps, "energy_mj_per_inference")
        dynamic = _weighted(reps, "dynamic_energy_mj_per_inference")
        idle_w = [r["idle_power_w"] for r in reps if r["idle_power_w"] is not None]
        e.update(
            energy_mj_per_inference=gross,
            dynamic_energy_mj_per_inference=dynamic,
            energy_mj_per_inference_ci95=_between_ci95(reps, "energy_mj_per_inference", gross, floor=0.0),
            dynamic_energy_mj_per_inference_ci95=_between_ci95(reps, "dynamic_energy_mj_per_inference", dynamic),
            idle_power_w=float(np.mean(idle_w)) if len(idle_w) == len(reps) else None,
            avg_power_w=gross * entry["throughput_ips"] / 1e3
            if gross is not None and entry["throughput_ips"]
            else None,
            duration_s=entry["duration_s"],
            energy_j_total=gross * total_n / 1e3 if gross is not None else None,
        )
        entry["energy"] = e
    thermals = [
        energy.thermal_stats(p.series, p.phase("measure"), p.phase("warmup"), p.phase("idle"))  # type: ignore[arg-type]
        for p in parts
        if p.phase("measure") is not None and p.start_ns.size
    ]
    if thermals:
        temps = [t["max_temp_c"] for t in thermals if t.get("max_temp_c") is not None]
        throttled = [t for t in thermals if t.get("throttled")]
        entry["thermal"] = {
            **thermals[0],
            "max_temp_c": max(temps) if temps else None,
            "throttled": bool(throttled) if any(t.get("throttled") is not None for t in thermals) else None,
            **({"throttle_reason": throttled[0].get("throttle_reason")} if throttled else {}),
        }
