"""`host profile --runtime tensorrt` end to end on a faked Jetson Orin Nano: a real agent, the trtexec stand-in
(real flags, real export formats, real ONNX Runtime timings), fake sysfs for rails, clocks and nvpmodel."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import console_script
from tests.faultlib import AgentProc, isolated_env
from tests.jetson_fakes import GPU_RAIL_CURRENT, TOTAL_RAIL_CURRENT, build_orin_board, standin


@pytest.fixture
def jetson(tmp_path: Path) -> Iterator[dict[str, object]]:
    root = tmp_path / "sys"
    build_orin_board(root, pinned=False)
    bin_dir = tmp_path / "bin"
    build_log = tmp_path / "trtexec-calls.log"
    env = {
        "EDGEPROF_SYSFS_ROOT": str(root),
        "EDGEPROF_TRTEXEC": str(standin(bin_dir, "trtexec", "trtexec_standin.py")),
        "EDGEPROF_NVPMODEL": str(standin(bin_dir, "nvpmodel", "nvpmodel_standin.py")),
        "EDGEPROF_STANDIN_LOG": str(build_log),
        # While trtexec runs inferences the GPU rail draws 900 mA instead of 180, the module input 1800 mA.
        "EDGEPROF_STANDIN_RAIL": f"{root}{GPU_RAIL_CURRENT}:900;{root}{TOTAL_RAIL_CURRENT}:1800",
    }
    agent = AgentProc(tmp_path, "--profile", "jetson-orin-nano", env=env)
    agent.start()
    try:
        yield {"address": agent.address, "log": build_log, "root": root, "tmp": tmp_path}
    finally:
        agent.stop()


def _profile(jetson: dict[str, object], model: Path, out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    tmp = jetson["tmp"]
    assert isinstance(tmp, Path)
    return subprocess.run(
        [console_script("host"), "profile", str(model), "--device", str(jetson["address"]), "--runtime", "tensorrt",
         "--runs", "40", "--min-duration", "1", "--idle", "1", "--json", str(out), *extra],
        capture_output=True,
        text=True,
        timeout=240,
        env=isolated_env(tmp / "host-env"),
    )  # fmt: skip


def test_tensorrt_fp16_on_dla_builds_once_and_reports_engine_power_mode_and_layers(
    jetson: dict[str, object], squeezenet: Path, tmp_path: Path
) -> None:
    first = _profile(
        jetson, squeezenet, tmp_path / "1.json", "--precision", "fp16", "--dla", "0", "--op-profile",
        "--report", str(tmp_path / "1.md"),
    )  # fmt: skip
    assert first.returncode == 0, first.stderr
    assert "TensorRT fp16 on DLA0+GPU (trtexec 8.6.2" in first.stdout
    assert "Jetson power mode 15W (0), clocks floating (gpu 306-625 MHz" in first.stdout
    assert "rails moved by the work: VDD_CPU_GPU_CV (measured minus idle: VDD_CPU_GPU_CV +3." in first.stdout
    assert "rails moved by the work: VDD\\_CPU\\_GPU\\_CV" in (tmp_path / "1.md").read_text()  # Markdown-escaped
    (dev,) = json.loads((tmp_path / "1.json").read_text())["devices"]

    assert dev["status"] == "ok" and dev["latency_source"] == "per_inference"
    trt = dev["tensorrt"]
    assert trt["precision"] == "fp16" and trt["dla_core"] == 0 and trt["gpu_fallback"] is True
    assert trt["engine_cached"] is False and trt["engine_build_ms"] > 0
    assert trt["dla_layers"] >= 1 and trt["gpu_layers"] >= 1
    assert trt["latency_timer"] == "trtexec --exportTimes" and trt["device"] == "Orin"
    assert dev["n_inferences"] >= 40 and dev["n_warmup"] >= 10
    assert dev["latency_ms"]["p50"] > 0
    assert trt["gpu_compute_ms_p50"] <= dev["latency_ms"]["p50"]
    providers = {row["provider"] for row in dev["op_profile"]["top_nodes"]}
    assert providers == {"DLA", "GPU"}
    kinds = {row["op_type"] for row in dev["op_profile"]["by_type"]}
    assert "ForeignNode" in kinds and "Softmax" in kinds  # types from trtexec's placement report
    jetson_state = dev["jetson"]
    assert jetson_state["power_mode"] == "15W" and jetson_state["power_mode_id"] == 0
    assert jetson_state["clocks_pinned"] is False and "gpu 306-625 MHz" in jetson_state["clocks_floating"]
    assert jetson_state["clocks_mhz"]["before"]["gpu"] == pytest.approx(306.0)
    assert any("clocks not pinned" in w for w in dev["validity"]["warnings"])
    assert dev["rail_movement"]["moved"] == ["VDD_CPU_GPU_CV"]
    gpu_rail = next(r for r in dev["rail_movement"]["rails"] if r["name"] == "VDD_CPU_GPU_CV")
    assert gpu_rail["delta_w"] == pytest.approx(5.064 * (0.900 - 0.180), rel=0.1)

    second = _profile(jetson, squeezenet, tmp_path / "2.json", "--precision", "fp16", "--dla", "0")
    assert second.returncode == 0, second.stderr
    (again,) = json.loads((tmp_path / "2.json").read_text())["devices"]
    assert again["tensorrt"]["engine_cached"] is True and again["tensorrt"]["engine_build_ms"] is None
    assert again["tensorrt"]["engine"] == trt["engine"]
    log = Path(str(jetson["log"])).read_text().splitlines()
    assert sum(line.startswith("build ") for line in log) == 1, log
