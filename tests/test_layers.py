"""The house keeps its shape: host/'s wings only import downwards, host and agent share only protos/ and
device_profiles/, and no import circle exists anywhere (pyproject's [tool.importlinter] contracts)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("host", "agent", "protos", "device_profiles")

#: Runs in a child whose working directory is the tree to check: builds the import graph (lazy imports inside
#: functions included) and prints each strongly connected set of more than one module, one per line.
_CYCLES = textwrap.dedent(
    """
    import sys
    import grimp

    sys.setrecursionlimit(10_000)
    graph = grimp.build_graph(*sys.argv[1:])
    edges = {m: graph.find_modules_directly_imported_by(m) for m in graph.modules}
    index, low, stack, on_stack, counter = {}, {}, [], set(), [0]

    def connect(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in edges[v]:
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                print(" <-> ".join(sorted(group)))

    for module in sorted(edges):
        if module not in index:
            connect(module)
    """
)


def _lint_imports(tree: Path) -> subprocess.CompletedProcess[str]:
    code = "import sys; from importlinter.cli import lint_imports; sys.exit(lint_imports(no_cache=True, no_logo=True))"
    return subprocess.run(
        [sys.executable, "-c", code], cwd=tree, capture_output=True, text=True, timeout=120, env=_env(tree)
    )


def _cycles(tree: Path) -> list[str]:
    command = [sys.executable, "-c", _CYCLES, *PACKAGES]
    result = subprocess.run(command, cwd=tree, capture_output=True, text=True, timeout=120, env=_env(tree))
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


def _env(tree: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(tree)}


@pytest.fixture(scope="module")
def copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The packages and pyproject.toml copied, so a test can add an import without touching the checkout."""
    tree = tmp_path_factory.mktemp("tree")
    for package in PACKAGES:
        shutil.copytree(ROOT / package, tree / package, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tree / "pyproject.toml")
    return tree


def test_the_checkout_keeps_every_layer_contract() -> None:
    result = _lint_imports(ROOT)

    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_no_import_circle_exists_in_any_package() -> None:
    assert _cycles(ROOT) == []


@pytest.mark.parametrize(
    ("module", "added", "broken"),
    [
        ("host/analysis/stats.py", "import host.run.profiling", "host/ is in wings"),  # analysis -> run
        ("host/store/rundata.py", "from host.analysis import energy", "host/ is in wings"),  # store -> analysis
        ("host/prepare/examples.py", "import host.analysis.stats", "host/ is in wings"),  # siblings stay apart
        ("host/fleet/client.py", "import agent.errors", "the host never imports the board package"),
        ("agent/jobs/job.py", "import agent.jobs.runner", "the job runner's rooms"),
        ("agent/device/board.py", "import agent.jobs.runner", "agent/ is in rooms"),  # device -> jobs
        ("agent/inference/worker.py", "import agent.service.server", "agent/ is in rooms"),  # no grpc in a worker
    ],
)
def test_a_lower_to_higher_import_breaks_the_suite(copy: Path, module: str, added: str, broken: str) -> None:
    path = copy / module
    original = path.read_text(encoding="utf-8")
    path.write_text(original + f"\n{added}  # the import under test\n", encoding="utf-8")
    try:
        result = _lint_imports(copy)
    finally:
        path.write_text(original, encoding="utf-8")

    assert result.returncode != 0
    assert broken in result.stdout.replace("\n", " ") and "BROKEN" in result.stdout


def test_a_new_circle_is_found(copy: Path) -> None:
    path = copy / "host/analysis/intervals.py"
    original = path.read_text(encoding="utf-8")
    path.write_text(original + "\nfrom host.analysis import stats  # stats imports intervals: a circle\n")
    try:
        found = _cycles(copy)
    finally:
        path.write_text(original, encoding="utf-8")

    assert found == ["host.analysis.intervals <-> host.analysis.stats"]
