"""Energy an agent refuses to measure (a phone on a USB cable): absent with its reason, the latency still valid."""

from __future__ import annotations

import io
from typing import Any

import numpy as np

from host.analysis.document import NO_SENSOR, no_energy_text
from host.analysis.summary import device_entry
from host.analysis.validity import assess
from host.run.final_table import final_table
from host.store.rundata import DeviceRaw, PhaseSpan
from protos import agent_pb2 as pb

REFUSED = (
    "energy refused: the phone is charging or USB-powered (battery Charging, usb online), so the fuel gauge does"
    " not see what the phone draws: use adb over Wi-Fi, or a hub that cuts VBUS"
)


def _phone_entry(notes: dict[str, str]) -> dict[str, Any]:
    """A phone's job as the bridge ends it: 400 measured inferences of ~2 ms over 2 s, warmup done, no power."""
    rng = np.random.default_rng(1)
    starts = np.arange(400, dtype=np.int64) * 5_000_000 + 1_000_000_000
    ends = starts + (2_000_000 + rng.integers(0, 200_000, 400))
    raw = DeviceRaw(
        "phone",
        start_ns=starts,
        end_ns=ends,
        warmup_start_ns=np.array([900_000_000]),
        warmup_end_ns=np.array([902_000_000]),
        phases=[PhaseSpan("warmup", 900_000_000, 990_000_000), PhaseSpan("measure", int(starts[0]), int(ends[-1]))],
    )
    end = pb.JobEnd(status=pb.JobEnd.OK, measured=400, notes=notes)
    entry = device_entry("phone", raw, pb.JobInfo(runtime="tflite-benchmark_model"), end, upload_bytes=0)
    entry["validity"] = assess(entry, runs=100, min_duration_s=1.0)
    return entry


def test_refused_energy_is_a_warning_with_the_full_reason_and_the_latency_stays_valid() -> None:
    entry = _phone_entry({"energy_refused": REFUSED, "energy_refused_short": "charging"})

    assert entry["energy"]["refused"] == REFUSED and entry["energy"]["refused_short"] == "charging"
    assert entry["energy"]["problem"] is None and entry["energy"]["energy_mj_per_inference"] is None
    assert entry["validity"]["valid"] is True, entry["validity"]["reasons"]
    assert f"energy not measured: {REFUSED}" in entry["validity"]["warnings"]


def test_the_table_says_the_refusal_in_one_word_and_prints_no_error_line() -> None:
    entry = _phone_entry({"energy_refused": REFUSED, "energy_refused_short": "charging"})
    out = io.StringIO()

    final_table({"run_id": "r1", "model": {"path": "m.tflite"}, "devices": [entry]}, out=out, width=200)

    text = out.getvalue()
    assert "charging" in text and NO_SENSOR not in text
    assert "error" not in text


def test_an_agent_word_that_is_not_one_word_shows_as_refused_and_imported_junk_as_no_sensor() -> None:
    entry = _phone_entry({"energy_refused": REFUSED, "energy_refused_short": "[red]USB power[/red]"})
    assert entry["energy"]["refused_short"] == "refused"
    assert no_energy_text(entry) == "refused"
    # A document from elsewhere (`runs import`) with something odd where the word goes.
    entry["energy"]["refused_short"] = "<b>charging</b>"
    assert no_energy_text(entry) == NO_SENSOR


def test_a_board_without_a_power_sensor_still_says_so() -> None:
    entry = _phone_entry({})
    assert "refused" not in entry["energy"]
    assert no_energy_text(entry) == NO_SENSOR
    assert not [w for w in entry["validity"]["warnings"] if w.startswith("energy not measured")]
