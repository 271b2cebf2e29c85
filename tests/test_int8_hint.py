"""Why an int8 model can be slower than float: the hint in validity, and the CPU's int8 dot-product flag."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.device.board import cpu_int8_dot
from host.analysis.validity import assess

X86_FLAGS = "fpu vme sse sse2 avx avx2 avx512f avx512bw"


def _cpuinfo(root: Path, flags_line: str) -> None:
    (root / "proc").mkdir(parents=True, exist_ok=True)
    (root / "proc" / "cpuinfo").write_text(f"processor\t: 0\nmodel name\t: test\n{flags_line}\n\n")


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (f"flags\t\t: {X86_FLAGS}", False),
        (f"flags\t\t: {X86_FLAGS} avx512_vnni", True),
        ("Features\t: fp asimd evtstrm aes crc32", False),  # Cortex-A72 (Raspberry Pi 4)
        ("Features\t: fp asimd evtstrm aes crc32 asimddp", True),  # Cortex-A76 (Raspberry Pi 5)
    ],
)
def test_int8_dot_product_is_read_from_cpuinfo(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, line: str, expected: bool
) -> None:
    _cpuinfo(tmp_path, line)
    monkeypatch.setenv("EDGEPROF_SYSFS_ROOT", str(tmp_path))

    assert cpu_int8_dot() is expected


def test_no_cpuinfo_is_unknown(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGEPROF_SYSFS_ROOT", str(tmp_path))

    assert cpu_int8_dot() is None


def _entry(steps: list[str], int8_dot: str) -> dict:  # type: ignore[type-arg]
    return {
        "status": "ok",
        "n_inferences": 200,
        "duration_s": 3.0,
        "recipe": {"steps": steps},
        "board": {"metadata": {"cpu_int8_dot": int8_dot}},
    }


def test_dynamic_int8_gets_a_hint_that_names_the_cpu_when_it_lacks_int8_dot() -> None:
    plain = assess(_entry(["check", "quantize-int8-dynamic"], "yes"), runs=100, min_duration_s=2.0)
    old_cpu = assess(_entry(["check", "quantize-int8-dynamic"], "no"), runs=100, min_duration_s=2.0)
    static = assess(_entry(["check", "quantize-int8-static"], "no"), runs=100, min_duration_s=2.0)

    (hint,) = [w for w in plain["warnings"] if "dynamic int8" in w]
    assert "--quantize-mode static" in hint and "no int8 dot-product" not in hint
    assert any("this CPU has no int8 dot-product instructions" in w for w in old_cpu["warnings"])
    assert not any("int8" in w for w in static["warnings"])
