"""Two `host profile` commands at once on one machine (two terminals, parallel CI jobs) both succeed."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from host.fleet.local_agent import claim_data_dir
from tests.conftest import console_script

FAST = ["--runs", "20", "--min-duration", "0.2", "--idle", "0", "--warmup", "2", "--threads", "1", "--quiet"]


def test_two_hosts_with_embedded_agents_at_once_both_succeed(squeezenet: Path, tmp_path: Path) -> None:
    outs = [tmp_path / "a.json", tmp_path / "b.json"]
    procs = [
        subprocess.Popen(
            [console_script("host"), "profile", str(squeezenet), *FAST, "--json", str(out)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=os.environ.copy(),
        )
        for out in outs
    ]
    results = []
    for proc in procs:
        try:
            results.append(proc.communicate(timeout=240))
        finally:
            proc.kill()

    for proc, (_, err) in zip(procs, results, strict=True):
        assert proc.returncode == 0, err
    docs = [json.loads(out.read_text()) for out in outs]
    assert all(doc["devices"][0]["status"] == "ok" for doc in docs)
    assert docs[0]["run_id"] != docs[1]["run_id"]
    cache = Path(os.environ["XDG_CACHE_HOME"]) / "edgeprof"
    assert (cache / "local-agent" / "journal.sqlite").exists()
    assert (cache / "local-agent-2" / "journal.sqlite").exists()


def test_data_dir_claim_moves_to_the_next_free_directory_and_frees_on_close(tmp_path: Path) -> None:
    first_dir, first_lock = claim_data_dir(tmp_path / "local-agent")
    second_dir, second_lock = claim_data_dir(tmp_path / "local-agent")
    first_lock.close()
    third_dir, third_lock = claim_data_dir(tmp_path / "local-agent")
    second_lock.close()
    third_lock.close()

    assert first_dir == tmp_path / "local-agent"
    assert second_dir == tmp_path / "local-agent-2"
    assert third_dir == tmp_path / "local-agent"
