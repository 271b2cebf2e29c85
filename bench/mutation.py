"""Mutation score of the modules users trust most (issue 18): mutmut per module, against that module's own tests.

    python bench/mutation.py                    # every module in MODULES, one after the other
    python bench/mutation.py host/analysis/stats.py      # one module alone
    python bench/mutation.py --record ...       # and write its row of bench/RESULTS.md

Each module runs in its own sandbox, `.mutation/<module>/`: links to the source and test folders and a
pyproject.toml whose `[tool.mutmut]` is the repository's plus `only_mutate` = the module and the test
selection = its test files. mutmut copies everything into the sandbox's `mutants/` and mutates only that
copy, so the working tree is never touched. One mutmut child process (`--max-children 1`): the machine
is shared. A module with many mutants or slow tests runs a seeded random sample (SAMPLE below), which the
same command draws again.

Score = (killed + timeout) / mutants run; a mutant that none of the selected tests reaches ("no tests")
counts as not killed. Survivors are listed, with their diff and the reason they may stay (EXPLAINED) or
"needs a test", in bench/results/mutation_survivors.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import random
import re
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "RESULTS.md"
RECORD_JSON = REPO / "bench" / "results" / "mutation.json"
SURVIVORS_MD = REPO / "bench" / "results" / "mutation_survivors.md"
SANDBOXES = REPO / ".mutation"
SECTION = "Mutation score (issue 18)"
GOAL_PCT = 85.0
#: What a sandbox links to: everything the tests import or read.
LINKED = ("agent", "host", "protos", "device_profiles", "tests")

#: module -> the test files that are its own (fast, in-process: mutmut learns which test reaches which
#: function by running them in its own process, so code reached only in a subprocess counts as "no tests").
MODULES: dict[str, tuple[str, ...]] = {
    "host/analysis/energy.py": ("tests/test_energy.py", "tests/test_energy_alias.py", "tests/test_energy_rails.py"),
    # The journal on its own: agent-level tests (test_job_lifecycle.py, test_faults_runner.py) reach it too,
    # but take a minute per mutant on this machine.
    "agent/storage/journal.py": ("tests/test_journal.py",),
    "agent/service/server.py": (
        "tests/test_auth.py",
        "tests/test_agent_server.py",
        "tests/test_server_limits.py",
        "tests/test_server_transport.py",
    ),
    # Not the Chromium rendering test (7 s, which every mutant of the module would run): it checks how a
    # browser draws the page; the page's text and structure are checked by the tests below.
    "host/report/html.py": (
        "tests/test_report_html.py",
        "--deselect",
        "tests/test_report_html.py::test_report_with_several_devices_renders_all_plots_in_chromium",
        "tests/test_report_escaping.py",
        "tests/test_report_real_run.py",
    ),
    # The runner driven directly with real workers (test_job_runner.py, ~25 s), and its gRPC contracts.
    "agent/jobs/runner.py": ("tests/test_job_runner.py", "tests/test_server_limits.py"),
    "agent/jobs/execution.py": ("tests/test_job_runner.py", "tests/test_server_limits.py"),
    "agent/jobs/validation.py": ("tests/test_runner_contracts.py", "tests/test_server_limits.py"),
    "host/analysis/stats.py": ("tests/test_stats.py", "tests/test_compare_simulation.py"),
    "host/analysis/compare.py": ("tests/test_compare_verdicts.py", "tests/test_compare_json.py"),
    "host/run/collect.py": ("tests/test_collect_validation.py", "tests/test_collect_sequence.py"),
    "agent/storage/model_cache.py": (
        "tests/test_model_cache.py",
        "tests/test_genai_pack.py",
        "tests/test_upload_limits.py",
    ),
}
#: module -> how many mutants to draw (seeded) instead of running all, so that one module's run fits a
#: shared 2-core machine (host/analysis/energy.py: 745 mutants took 8 minutes in full): fewer where each mutant's
#: tests start a real agent and run real jobs.
SAMPLE: dict[str, int] = {
    "host/analysis/energy.py": 150,
    "host/analysis/stats.py": 150,
    "host/report/html.py": 200,
    "agent/service/server.py": 100,
    "agent/jobs/runner.py": 100,
    "agent/jobs/execution.py": 150,
}
SEED = 18

#: Surviving mutants that may stay, each with the one-line reason (an equivalent mutant: no behaviour a
#: user could notice changes). Keyed by mutmut's mutant name.
_INT_MEDIANS = (
    "equivalent: integer ns latencies (below 2^53) give the same medians as float64; the results are float64 either way"
)
_JSON_WHITESPACE = "equivalent: the same JSON document, only its whitespace differs (every reader parses it)"
#: Files listed under the cache's lock (or before the agent serves) vanish before their stat/unlink only if
#: another process deletes them: two agents on one data directory are refused by its instance lock.
_VANISHED_FILE = (
    "reached only when another process deletes the file between its listing and its stat or unlink (the agent"
    " removes its own under the cache's lock, and one data directory serves one agent)"
)
_JSON_LOADED = (
    "equivalent: `default` matters only for values JSON cannot hold, and every compared document was parsed from"
    " JSON (a result file, the store) or just written by json.dumps without one"
)
_VERDICT_NOTED = (
    "equivalent: every change that reaches this line carries a note (bootstrap, run-to-run spread or within-run"
    " evidence), so the empty branch is never taken"
)
EXPLAINED: dict[str, str] = {
    "host.analysis.energy.x__block_edges__mutmut_14": "equivalent: block edges are ns times below 2^53, exact as float64,"
    " and cumulative_j (host/analysis/power_trace.py) turns them back into int64 before any arithmetic",
    "host.analysis.stats.x_is_stable__mutmut_19": _INT_MEDIANS,
    "host.analysis.stats.x_running_p50_ms__mutmut_3": _INT_MEDIANS,
    "host.analysis.stats.x_running_p50_ms__mutmut_5": _INT_MEDIANS,
    "host.analysis.stats.x_running_p50_ms__mutmut_28": "equivalent: partitioning at mid-2 and mid leaves exactly one value"
    " between them, so position mid-1 still holds the lower middle value",
    "host.analysis.compare.x_render_json__mutmut_8": _JSON_WHITESPACE,
    "host.analysis.compare.x_render_json__mutmut_10": _JSON_WHITESPACE,
    "host.analysis.compare.x_render_json__mutmut_12": _JSON_WHITESPACE,
    "host.report.html.x_render_html__mutmut_141": "equivalent: http-equiv values are case-insensitive in HTML",
    "agent.storage.journal.xǁJournalǁjobs__mutmut_13": "equivalent: SQLite column names are case-insensitive (ORDER BY)",
    "agent.storage.journal.xǁJournalǁacknowledge__mutmut_18": "equivalent: acknowledging the acknowledged batch again goes on"
    " to delete batches that are already gone and set acked_seq to what it is: 0 pruned either way",
    "agent.storage.journal.xǁJournalǁread__mutmut_1": "equivalent: the default page size of a read; tail() reads page after"
    " page until none is left, so every batch is sent, in order, either way",
    "agent.storage.journal.xǁJournalǁtail__mutmut_1": "equivalent in results: the default period (0.5 s vs 1.5 s) at which a"
    " stream with nothing to send re-checks that its caller is still there; every batch and the end are sent"
    " at once on their write either way (test_a_waiting_tail_notices_its_stop... pins the period it passes)",
    "agent.storage.model_cache.xǁModelCacheǁ_evict__mutmut_16": "equivalent: the loop breaks only once the upload fits, so"
    " the check after it never raises then either",
    "agent.storage.model_cache.xǁModelCacheǁunpin__mutmut_7": "equivalent: unpinning a model no job pinned leaves 0 or -1,"
    " and both remove nothing",
    "agent.storage.model_cache.xǁModelCacheǁunpacked__mutmut_14": "equivalent: .unpacked's parent is the cache directory,"
    " which exists (the cache made it), so `parents` changes nothing",
    "agent.storage.model_cache.xǁModelCacheǁunpacked__mutmut_18": "equivalent: .unpacked's parent is the cache directory,"
    " which exists (the cache made it), so `parents` changes nothing",
    "agent.storage.model_cache.xǁModelCacheǁunpacked__mutmut_16": "equivalent: .unpacked's parent is the cache directory,"
    " which exists (the cache made it), so `parents` changes nothing",
    "agent.storage.model_cache.x_check_sha256__mutmut_4": "equivalent: neither '' nor 'XXXX' is 64 hex digits; None fails"
    " the same way in both (on sha256[:80])",
    "agent.storage.model_cache.x__size__mutmut_1": _VANISHED_FILE,
    "agent.storage.model_cache.xǁModelCacheǁ__init____mutmut_16": _VANISHED_FILE,
    "agent.storage.model_cache.xǁModelCacheǁ__init____mutmut_17": _VANISHED_FILE,
    "agent.storage.model_cache.xǁModelCacheǁ_evict__mutmut_25": _VANISHED_FILE,
    "agent.storage.model_cache.xǁModelCacheǁ_evict__mutmut_26": _VANISHED_FILE,
    "agent.storage.model_cache.xǁModelCacheǁ_held__mutmut_7": "equivalent in use: `until == now` needs the lease read at the"
    " very monotonic nanosecond it ends; < and <= then differ for that one reading only",
    "host.analysis.compare.x__shown__mutmut_8": _JSON_LOADED,
    "host.analysis.compare.x__shown__mutmut_10": _JSON_LOADED,
    "host.analysis.compare.x__verdict__mutmut_14": "equivalent: only evidence 'none' or 'missing' gets here, and metric_change"
    " and plain_change always give those a note, so the dash fallback is never shown",
    "host.analysis.compare.x__verdict__mutmut_3": _VERDICT_NOTED,
    "host.analysis.compare.x__verdict__mutmut_4": _VERDICT_NOTED,
    "host.analysis.compare.x_history_for__mutmut_13": "equivalent: 'XXXX' is never a stored model's sha256 (64 hex digits), so"
    " the extra name in the SQL IN (...) matches no run",
    "host.analysis.compare.x_load_side__mutmut_26": "equivalent: RunData.raw defaults to an empty dict (default_factory=dict)",
    "host.analysis.energy.x__idle_power__mutmut_36": "equivalent: idle block edges are ns times below 2^53, exact as float64,"
    " and cumulative_j (host/analysis/power_trace.py) turns them back into int64 before any arithmetic",
}

_PB_DOUBLES = "equivalent: protobuf repeated double fields read as float64 arrays (an empty one too)"
_NO_EMPTY_BLOCKS = (
    "equivalent for agents: they never send an empty series block (agent/device/sampler.py drains only samples), so"
    " the newest sample is in the last block"
)
_WINDOW_CUT = (
    "equivalent in result: only takes in more blocks, and the final cut (samples within window_ns of the"
    " newest) keeps the same samples"
)
_PHASE_STARTS = (
    "equivalent for agents: every phase an agent sends carries its monotonic start time, never 0, so some"
    " phase of a part always has a start"
)
EXPLAINED.update(
    {
        "host.run.collect.xǁJobCollectorǁ_check__mutmut_70": _PB_DOUBLES,
        "host.run.collect.xǁJobCollectorǁ_check__mutmut_72": _PB_DOUBLES,
        "host.run.collect.xǁJobCollectorǁadd__mutmut_147": _PB_DOUBLES,
        "host.run.collect.xǁJobCollectorǁadd__mutmut_149": _PB_DOUBLES,
        "host.run.collect.xǁJobCollectorǁraw__mutmut_47": "equivalent: astype(None) is float64, which the values are",
        "host.run.collect.xǁJobCollectorǁpart_raw__mutmut_16": _PHASE_STARTS,
        "host.run.collect.xǁJobCollectorǁpart_raw__mutmut_19": _PHASE_STARTS,
        "host.run.collect.xǁJobCollectorǁrecent_power_w__mutmut_10": _NO_EMPTY_BLOCKS,
        "host.run.collect.xǁJobCollectorǁrecent_power_w__mutmut_15": _NO_EMPTY_BLOCKS,
        "host.run.collect.xǁJobCollectorǁrecent_power_w__mutmut_17": _NO_EMPTY_BLOCKS,
        "host.run.collect.xǁJobCollectorǁrecent_power_w__mutmut_12": _WINDOW_CUT,
        "host.run.collect.xǁJobCollectorǁrecent_power_w__mutmut_13": _WINDOW_CUT,
        "host.run.collect.xǁJobCollectorǁrecent_power_w__mutmut_20": _WINDOW_CUT,
        "host.run.collect.xǁJobCollectorǁrecent_power_w__mutmut_25": _WINDOW_CUT,
        "host.run.collect.xǁJobCollectorǁrecent_power_w__mutmut_29": _WINDOW_CUT,
        "host.run.collect.xǁJobCollectorǁrecent_power_w__mutmut_3": "equivalent in result: other kinds reach the rail plan,"
        " which sums only power and energy series",
    }
)

_REFUSAL_ARITY = (
    "equivalent on grpcio 1.85: a refusal handler of the wrong arity still aborts UNAUTHENTICATED with the hint"
    " before reading a message (test_every_kind_of_call_without_the_right_token_is_unauthenticated passes with it)"
)
_THREAD_NAMES = "equivalent: the name prefix of gRPC's worker threads shows only in a debugger's thread list"
_OPTION_KEYS = (
    "caught where it would happen: test_every_grpc_option_key_in_the_code_is_one_grpc_knows reads the source and"
    " fails on a misspelt key (mutmut's mutants live in a copy that test does not read); a key gRPC does not know"
    " is silently ignored, which no behaviour test of this option can see on grpc 1.85"
)
EXPLAINED.update(
    {
        **{
            f"agent.service.server.xǁTokenAuthInterceptorǁintercept_service__mutmut_{n}": _REFUSAL_ARITY
            for n in (26, 27, 29, 31, 32, 33, 34)
        },
        "agent.service.server.xǁTokenAuthInterceptorǁintercept_service__mutmut_10": "equivalent: a call without the token"
        " header is compared with a placeholder, and the agent refuses tokens under 16 characters (agent/service/serve.py),"
        " so b'' and b'XXXX' match none",
        "agent.service.server.x_create_server__mutmut_34": _THREAD_NAMES,
        "agent.service.server.x_create_server__mutmut_36": _THREAD_NAMES,
        **{f"agent.service.server.x_create_server__mutmut_{n}": _OPTION_KEYS for n in (39, 40, 44, 51, 52)},
        "agent.service.server.x_create_server__mutmut_1": "a tuning default, not a behaviour: 17 threads instead of 16; every"
        " bound derived from the pool is tested at its own setting (test_server_limits.py, test_server_transport.py)",
        "agent.service.server.x_create_server__mutmut_98": "equivalent: grpcio-health-checking's HealthServicer starts with"
        " the server-wide service '' SERVING",
    }
)

EXPLAINED.update(
    {
        "agent.jobs.runner.xǁJobRunnerǁ_write_unjournaled__mutmut_9": "equivalent: the job id was just read from the dict,"
        " under the lock, and only this runner thread removes entries, so pop never misses",
        "agent.jobs.execution.xǁJobExecutionǁ__init____mutmut_10": "equivalent: _begin_part gives every part its own Event"
        " before anything waits on it",
        "agent.jobs.execution.xǁJobExecutionǁ_interrupted__mutmut_3": "equivalent: _outcome reads the cancel flag itself before"
        " the outcome string, so a cancelled job ends CANCELLED whatever _interrupted returned",
        "agent.jobs.execution.xǁJobExecutionǁ_settle__mutmut_33": "equivalent: cancel() also terminates the worker, so a settle"
        " that went on sends 'go' to a dead worker and _wait_exit returns at once: CANCELLED in settle either way",
        "agent.jobs.execution.xǁJobExecutionǁ_read_worker__mutmut_51": "equivalent: a phase event without end_ns: None and 0"
        " both leave PhaseEvent.end_ns unset (0)",
        "agent.jobs.execution.xǁJobExecutionǁ_run_part__mutmut_128": "equivalent: the flusher stops as soon as it is told to"
        " (an Event it checks every 0.1 s), so the 5 s bound on joining it never applies",
        "agent.jobs.execution.xǁJobExecutionǁ_run_part__mutmut_70": "equivalent: the initial outcome is only ever compared with"
        " 'cancelled' and 'timeout'; any other string is the normal end",
    }
)

#: Lines under the table: how to read it, and what is left (kept by hand, rewritten with every record).
NOTES = (
    "score = (killed + timeout) / mutants run; a mutant none of the selected tests reaches counts as not killed."
    " equivalent = survivors with a reason (EXPLAINED, or a kind recognised by construction in equivalent_reason());"
    " unexplained = survivors that still need a test, each listed with its diff.",
    "Each module's tests are only its own fast ones, so code reached only from subprocesses or slow agent-level"
    " tests survives here even where the full suite would catch it.",
    "A command ending in `--survivors MODULE` re-tested the recorded survivors against tests written for them"
    " (the mutants killed before stay killed); a survivor killed only by a test added after the last such run is"
    " still listed as surviving until the next one.",
    "Full runs (no sample): journal, compare, collect, model_cache. Samples (seeded, so the command redraws the"
    " same mutants): energy, stats, html, server, jobs (1357 mutants at ~20 s each: the job runner's tests run"
    " real workers).",
)

STATUS_BY_EXIT_CODE = {
    1: "killed",
    3: "killed",
    37: "killed",  # caught by the type checker
    0: "survived",
    5: "no tests",
    33: "no tests",
    34: "skipped",
    36: "timeout",
    -24: "timeout",
    24: "timeout",
    152: "timeout",
    255: "timeout",
    None: "not checked",
}


@dataclass
class ModuleScore:
    module: str
    tests: list[str]
    mutants_total: int
    mutants_run: int
    sampled: bool
    counts: dict[str, int] = field(default_factory=dict)
    survivors: list[str] = field(default_factory=list)
    no_tests: list[str] = field(default_factory=list)
    date: str = ""
    command: str = ""
    wall_s: float = 0.0

    @property
    def detected(self) -> int:
        return self.counts.get("killed", 0) + self.counts.get("timeout", 0)

    @property
    def score_pct(self) -> float:
        return 100.0 * self.detected / self.mutants_run if self.mutants_run else 0.0


def pyproject_mutmut() -> dict[str, Any]:
    return dict(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["mutmut"])


def slug(module: str) -> str:
    return module.removesuffix(".py").replace("/", ".")


def mutmut_config(module: str, tests: tuple[str, ...]) -> str:
    """The repository's [tool.mutmut], narrowed to one module and its tests, as a TOML section."""
    base = pyproject_mutmut()
    base["only_mutate"] = [module]
    base["pytest_add_cli_args_test_selection"] = list(tests)
    base["pytest_add_cli_args"] = [*base.get("pytest_add_cli_args", []), "-p", "mutmut_subprocesses"]
    lines = ["[tool.mutmut]"]
    for key, value in base.items():
        lines.append(f"{key} = {json.dumps(value)}")  # strings, lists of strings, bools, numbers: JSON == TOML
    return "\n".join(lines) + "\n"


def make_sandbox(module: str, tests: tuple[str, ...]) -> Path:
    """A fresh sandbox: links to the code and tests, and a pyproject.toml narrowed to this module."""
    box = SANDBOXES / slug(module)
    shutil.rmtree(box, ignore_errors=True)
    box.mkdir(parents=True)
    for name in LINKED:
        (box / name).symlink_to(REPO / name, target_is_directory=True)
    text = (REPO / "pyproject.toml").read_text()
    text = re.sub(r"(?ms)^\[tool\.mutmut\]\n.*?(?=^\[|\Z)", "", text)
    (box / "pyproject.toml").write_text(text.rstrip("\n") + "\n\n" + mutmut_config(module, tests))
    return box


#: Run in the sandbox: mutmut's own first step of `mutmut run` (copy, then write every mutant into the
#: copy), without running tests, so that a sample can be drawn from the names.
_GENERATE = """
import os
from mutmut.__main__ import copy_also_copy_files, copy_src_dir, create_mutants, setup_source_paths
from mutmut.mutation.trampoline import set_mutant_under_test
set_mutant_under_test("mutant_generation")
os.makedirs("mutants", exist_ok=True)
copy_src_dir(); copy_also_copy_files(); setup_source_paths(); create_mutants(1)
"""


def meta_path(box: Path, module: str) -> Path:
    return box / "mutants" / (module + ".meta")


def exit_codes(box: Path, module: str) -> dict[str, int | None]:
    return json.loads(meta_path(box, module).read_text())["exit_code_by_key"]


def generate_mutants(module: str, tests: tuple[str, ...]) -> tuple[Path, dict[str, str]]:
    """A fresh sandbox for `module` with every mutant written into its copy; returns it and mutmut's env."""
    box = make_sandbox(module, tests)
    # bench/ on the path for the pytest plugin bench/mutmut_subprocesses.py (see its docstring).
    pythonpath = os.pathsep.join(p for p in (str(REPO / "bench"), os.environ.get("PYTHONPATH", "")) if p)
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "PYTHONPATH": pythonpath}
    subprocess.run([sys.executable, "-c", _GENERATE], cwd=box, env=env, check=True, stdout=subprocess.DEVNULL)
    return box, env


def run_module(module: str, command: str) -> ModuleScore:
    tests = MODULES[module]
    for test in tests:
        if not test.startswith("-") and not (REPO / test.partition("::")[0]).exists():
            raise SystemExit(f"mutation: {module}: test file {test} does not exist")
    started = time.monotonic()
    box, env = generate_mutants(module, tests)
    names = sorted(exit_codes(box, module))
    chosen = names
    if module in SAMPLE and SAMPLE[module] < len(names):
        chosen = sorted(random.Random(SEED).sample(names, SAMPLE[module]))
    print(f"mutation: {module}: {len(names)} mutants, running {len(chosen)} against {' '.join(tests)}", flush=True)
    mutmut = [sys.executable, "-m", "mutmut", "run", "--max-children", "1"]
    # Named mutants are all run again; with no names mutmut runs every one it has no result for.
    subprocess.run(mutmut + (chosen if chosen is not names else []), cwd=box, env=env, check=False)
    codes = exit_codes(box, module)
    statuses = {name: STATUS_BY_EXIT_CODE.get(codes.get(name), "suspicious") for name in chosen}
    counts: dict[str, int] = {}
    for status in statuses.values():
        counts[status] = counts.get(status, 0) + 1
    return ModuleScore(
        module=module,
        tests=list(tests),
        mutants_total=len(names),
        mutants_run=len(chosen),
        sampled=len(chosen) < len(names),
        counts=counts,
        survivors=sorted(n for n, s in statuses.items() if s in ("survived", "suspicious", "not checked")),
        no_tests=sorted(n for n, s in statuses.items() if s == "no tests"),
        date=dt.date.today().isoformat(),
        command=command,
        wall_s=round(time.monotonic() - started, 1),
    )


def _with_step(command: str, step: str) -> str:
    """The record's command with `step` appended once (re-testing survivors again repeats no step)."""
    return command if command.split("; ")[-1] == step else f"{command}; {step}"


def rerun_survivors(module: str) -> ModuleScore:
    """Test the recorded run's survivors again against the current tests (after tests were added for them).

    The mutants killed before stay killed (tests were only added); the source must be the one recorded, which
    the same mutant count stands for, or the names would point at other mutants.
    """
    previous = load_record().get(module)
    if previous is None:
        raise SystemExit(f"mutation: {module} has no recorded run to take the survivors of")
    again = sorted(previous["survivors"] + previous["no_tests"])
    tests = MODULES[module]
    started = time.monotonic()
    box, env = generate_mutants(module, tests)
    names = set(exit_codes(box, module))
    if len(names) != previous["mutants_total"] or not set(again) <= names:
        raise SystemExit(f"mutation: {module} changed since its recorded run: run it again in full")
    print(f"mutation: {module}: testing the {len(again)} recorded survivors again against {' '.join(tests)}")
    if again:
        subprocess.run(
            [sys.executable, "-m", "mutmut", "run", "--max-children", "1", *again], cwd=box, env=env, check=False
        )
    codes = exit_codes(box, module)
    statuses = {name: STATUS_BY_EXIT_CODE.get(codes.get(name), "suspicious") for name in again}
    counts = {k: v for k, v in previous["counts"].items() if k in ("killed", "timeout", "skipped")}
    for status in statuses.values():
        counts[status] = counts.get(status, 0) + 1
    return ModuleScore(
        module=module,
        tests=list(tests),
        mutants_total=previous["mutants_total"],
        mutants_run=previous["mutants_run"],
        sampled=previous["sampled"],
        counts=counts,
        survivors=sorted(n for n, s in statuses.items() if s in ("survived", "suspicious", "not checked")),
        no_tests=sorted(n for n, s in statuses.items() if s == "no tests"),
        date=dt.date.today().isoformat(),
        command=_with_step(previous["command"], f"python bench/mutation.py --survivors {module}"),
        wall_s=round(previous["wall_s"] + time.monotonic() - started, 1),
    )


_DIFFS = """
import json, sys
from mutmut.mutation.diff_apply import get_diff_for_mutant
path, names = sys.argv[1], json.loads(sys.stdin.read())
print(json.dumps({name: get_diff_for_mutant(name, path=path) for name in names}))
"""


def mutant_diffs(module: str, names: list[str]) -> dict[str, str]:
    """Each mutant's change as '-'/'+' lines (mutmut's own diff, read from the module's sandbox)."""
    if not names:
        return {}
    shown = subprocess.run(
        [sys.executable, "-c", _DIFFS, module],
        cwd=SANDBOXES / slug(module),
        input=json.dumps(names),
        capture_output=True,
        text=True,
        check=True,
    )
    return {
        name: "\n".join(line for line in diff.splitlines() if line[:1] in "+-" and line[:3] not in ("+++", "---"))
        for name, diff in json.loads(shown.stdout).items()
    }


_NUMBER = re.compile(r"(?<![\w.])\d+(?:\.\d*)?(?:e[-+]?\d+)?")


def _only_change(diff: str) -> tuple[str, str] | None:
    """The removed and added line of a one-line mutant, or None."""
    minus = [line[1:] for line in diff.splitlines() if line.startswith("-")]
    plus = [line[1:] for line in diff.splitlines() if line.startswith("+")]
    return (minus[0], plus[0]) if len(minus) == 1 and len(plus) == 1 else None


def equivalent_reason(diff: str) -> str | None:
    """Why a surviving mutant changes nothing a user could notice, for the few kinds where that holds by
    construction; None for every other mutant (those need a test or a reason in EXPLAINED)."""
    change = _only_change(diff)
    if change is None:
        return None
    old, new = change
    if old.lstrip().startswith("log.") and new.lstrip().startswith("log."):
        return "a log line's wording or arguments, for the operator: what the job does and sends is unchanged"
    dropped_int = {old.replace("dtype=np.int64", "dtype=None"), old.replace(", dtype=np.int64)", ", )")}
    if "dtype=np.int64" in old and new in dropped_int:
        return (
            "equivalent for every caller: they pass int64 ns arrays or int spans (Series.t_ns, inference"
            " windows), which NumPy keeps int64 anyway (an empty array's dtype shows nowhere)"
        )
    exact_float = {old.replace("astype(np.float64)", "astype(None)")}
    if "np.zeros(" in old:
        exact_float |= {old.replace("dtype=np.float64", "dtype=None"), old.replace(", dtype=np.float64)", ", )")}
    if "np.float64" in old and new in exact_float:
        return "equivalent: NumPy's default dtype (astype(None), np.zeros without dtype) is float64"
    sql = re.compile(r"\b(SELECT|INSERT|UPDATE|DELETE|BEGIN|COMMIT|PRAGMA|ALTER|WHERE|ORDER BY)\b", re.IGNORECASE)
    literals = re.compile(r"'[^']*'")
    if old != new and old.lower() == new.lower() and sql.search(old) and literals.findall(old) == literals.findall(new):
        return "equivalent: SQLite keywords, table and column names are case-insensitive (quoted values unchanged)"
    if old.replace('kind="stable"', "") == new.replace("kind=None", "").replace('kind="STABLE"', ""):
        return "equivalent: sorting plain integers; which of two equal start times comes first changes nothing"
    old_numbers, new_numbers = _NUMBER.findall(old), _NUMBER.findall(new)
    if _NUMBER.sub("#", old) == _NUMBER.sub("#", new) and len(old_numbers) == len(new_numbers):
        pairs = [(float(a), float(b)) for a, b in zip(old_numbers, new_numbers, strict=True) if a != b]
        if pairs and all(a != 0 and abs(b - a) / abs(a) <= 1e-6 for a, b in pairs):
            return "equivalent in effect: a unit constant off by 1 part in 10^6, far below any sensor's resolution"
    return None


def reason_for(name: str, diff: str) -> str | None:
    return EXPLAINED.get(name) or equivalent_reason(diff)


def print_score(score: ModuleScore, diffs: dict[str, str]) -> None:
    counts = ", ".join(f"{k} {v}" for k, v in sorted(score.counts.items()))
    print(f"mutation: {score.module}: {score.score_pct:.1f}% ({counts}) in {score.wall_s:.0f} s")
    for name in score.survivors + score.no_tests:
        kind = "survived" if name in score.survivors else "no tests"
        print(f"  {kind}: {name}  {reason_for(name, diffs.get(name, '')) or 'needs a test'}")
        for line in diffs.get(name, "").splitlines():
            print(f"      {line.strip()[:150]}")


def load_record() -> dict[str, dict]:
    return json.loads(RECORD_JSON.read_text()) if RECORD_JSON.exists() else {}


def record(scores: list[tuple[ModuleScore, dict[str, str]]]) -> None:
    data = load_record()
    for score, diffs in scores:
        entry = asdict(score)
        entry["diffs"] = diffs
        data[score.module] = entry
    RECORD_JSON.parent.mkdir(parents=True, exist_ok=True)
    RECORD_JSON.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    write_results_md(data)
    write_survivors_md(data)
    print(f"recorded in {RESULTS.relative_to(REPO)} and {SURVIVORS_MD.relative_to(REPO)}")


def _score_of(entry: dict) -> tuple[int, float]:
    counts = entry["counts"]
    detected = counts.get("killed", 0) + counts.get("timeout", 0)
    return detected, 100.0 * detected / entry["mutants_run"] if entry["mutants_run"] else 0.0


def write_results_md(data: dict[str, dict]) -> None:
    lines = [
        f"<!-- bench:{SECTION} -->",
        f"### {SECTION}",
        "",
        "mutmut 3, one module at a time against its own tests (`bench/mutation.py`, table MODULES), one child"
        f" process. Goal: >= {GOAL_PCT:.0f}% of mutants detected (killed or timed out) in each module; every"
        " survivor is explained or listed to get a test in"
        " [results/mutation_survivors.md](results/mutation_survivors.md).",
        "",
        "| module | tests | mutants | killed | timeout | survived | no tests | score | equivalent | score without"
        " equivalent | unexplained | command | date |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for module in [m for m in MODULES if m in data]:
        e = data[module]
        c = e["counts"]
        _, pct = _score_of(e)
        mutants = (
            f"{e['mutants_run']} (sample of {e['mutants_total']}, seed {SEED})"
            if e["sampled"]
            else str(e["mutants_run"])
        )
        left = e["survivors"] + e["no_tests"]
        unexplained = [n for n in left if not reason_for(n, e["diffs"].get(n, ""))]
        equivalent = len(left) - len(unexplained)
        detected, _ = _score_of(e)
        without = 100.0 * detected / (e["mutants_run"] - equivalent) if e["mutants_run"] > equivalent else 0.0
        tests = " ".join(t.removeprefix("tests/") for t in e["tests"])
        lines.append(
            f"| {module} | {tests} | {mutants} | {c.get('killed', 0)} | {c.get('timeout', 0)} |"
            f" {len(e['survivors'])} | {len(e['no_tests'])} | {pct:.1f}% | {equivalent} | {without:.1f}% |"
            f" {len(unexplained)} |"
            f" `{e['command']}` | {e['date']} |"
        )
    lines += ["", *(f"- {note}" for note in NOTES)]
    lines.append(f"<!-- /bench:{SECTION} -->")
    block = "\n".join(lines)
    text = RESULTS.read_text()
    pattern = re.compile(rf"<!-- bench:{re.escape(SECTION)} -->.*?<!-- /bench:{re.escape(SECTION)} -->", re.S)
    text = pattern.sub(lambda _m: block, text) if pattern.search(text) else text.rstrip("\n") + "\n\n" + block + "\n"
    RESULTS.write_text(text)


def write_survivors_md(data: dict[str, dict]) -> None:
    lines = [
        "# Surviving mutants (issue 18)",
        "",
        "Written by `python bench/mutation.py --record`. A survivor either has a reason to stay (an equivalent",
        "mutant: nothing a user could notice changes; the reasons live in `EXPLAINED` in bench/mutation.py) or",
        'is marked "needs a test". "no tests": none of the module\'s selected tests reaches the mutated function.',
        "",
    ]
    for module in [m for m in MODULES if m in data]:
        e = data[module]
        _, pct = _score_of(e)
        lines += [f"## {module}: {pct:.1f}%", ""]
        names = e["survivors"] + e["no_tests"]
        if not names:
            lines += ["Every mutant run was detected.", ""]
        for name in names:
            kind = "survived" if name in e["survivors"] else "no tests"
            diff = e.get("diffs", {}).get(name, "")
            lines.append(f"- `{name}` ({kind}): {reason_for(name, diff) or '**needs a test**'}")
            if diff:
                lines += ["  ```diff", *[f"  {d}" for d in diff.splitlines()], "  ```"]
        lines.append("")
    SURVIVORS_MD.write_text("\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("modules", nargs="*", help=f"modules to run (default all): {', '.join(MODULES)}")
    parser.add_argument("--record", action="store_true", help="write the rows to bench/RESULTS.md")
    parser.add_argument(
        "--survivors",
        action="store_true",
        help="run only the recorded survivors of each module again (after adding tests for them); implies --record",
    )
    parser.add_argument(
        "--rewrite",
        action="store_true",
        help="run nothing: write RESULTS.md's section and the survivors file again from bench/results/mutation.json"
        " (after a reason was added to EXPLAINED)",
    )
    args = parser.parse_args(argv)
    if args.rewrite:
        write_results_md(load_record())
        write_survivors_md(load_record())
        return 0
    configured = pyproject_mutmut()["only_mutate"]
    if sorted(configured) != sorted(MODULES):
        print("mutation: pyproject.toml [tool.mutmut] only_mutate and MODULES list different modules", file=sys.stderr)
        return 2
    unknown = [m for m in args.modules if m not in MODULES]
    if unknown:
        print(f"mutation: unknown module {unknown[0]} (known: {', '.join(MODULES)})", file=sys.stderr)
        return 2
    os.nice(10)  # a shared machine: other people's work first (mutmut's timeouts count CPU time, not wall time)
    scores = []
    for module in args.modules or list(MODULES):
        command = f"python bench/mutation.py {module}"
        score = rerun_survivors(module) if args.survivors else run_module(module, command)
        diffs = mutant_diffs(module, score.survivors + score.no_tests)
        print_score(score, diffs)
        scores.append((score, diffs))
    if args.record or args.survivors:
        record(scores)
    # Done: every module at the goal, or every mutant it left alive explained.
    done = [
        s.score_pct >= GOAL_PCT or all(reason_for(n, diffs.get(n, "")) for n in s.survivors + s.no_tests)
        for s, diffs in scores
    ]
    return 0 if all(done) else 1


if __name__ == "__main__":
    sys.exit(main())
