"""Which agent extras install from the package index on an arm64 board, per CPython version, from wheel tags.

For each Python version and each extra it asks pip to resolve, without installing or building anything,
`edgeprof`'s dependencies plus the extra's, with binary wheels only, for manylinux aarch64 up to the board's
glibc (2.35: Ubuntu 22.04 / JetPack 6; Debian 12 / Raspberry Pi OS Bookworm has 2.36). Environment markers
are evaluated for the board (aarch64 Linux, that Python), not for this machine. Prints one line per version
and extra: the wheels it would install, or the requirement no wheel satisfies.

Usage: python deploy/check_wheels.py [--python 3.10,3.11,3.12] [--extras agent,tflite,genai] [--glibc 2.35]
Needs the package index (pip's own settings and cache; local wheel folders and constraints are ignored).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

try:
    import tomllib
except ImportError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

from packaging.requirements import Requirement

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"
INDEX_URL = "https://pypi.org/simple"
#: manylinux tags older than the board's glibc that aarch64 wheels are published under.
MANYLINUX_MINORS = (17, 26, 27, 28, 31, 34, 35, 36)


def _board_environment(python: str) -> dict[str, str]:
    return {
        "python_version": python,
        "python_full_version": f"{python}.0",
        "implementation_name": "cpython",
        "platform_python_implementation": "CPython",
        "platform_machine": "aarch64",
        "sys_platform": "linux",
        "platform_system": "Linux",
        "os_name": "posix",
        "extra": "",
    }


def board_requirements(texts: list[str], python: str) -> tuple[list[str], list[str]]:
    """Requirements that apply on an aarch64 board with this Python (markers dropped), and those that do not."""
    kept: list[str] = []
    left_out: list[str] = []
    for text in texts:
        req = Requirement(text)
        applies = req.marker is None or req.marker.evaluate(_board_environment(python))
        req.marker = None
        (kept if applies else left_out).append(str(req))
    return kept, left_out


def _name(wheel: str) -> str:
    return re.split(r"-\d", wheel, maxsplit=1)[0].lower().replace("_", "-")


def resolve(requirements: list[str], python: str, glibc_minor: int) -> tuple[list[str], str | None]:
    """The wheel file names pip would install, or the one-line reason it cannot."""
    if not requirements:
        return [], None
    platforms = [f"--platform=manylinux_2_{minor}_aarch64" for minor in MANYLINUX_MINORS if minor <= glibc_minor]
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--dry-run",
            "--quiet",
            "--ignore-installed",
            "--only-binary=:all:",
            *platforms,
            f"--python-version={python}",
            "--implementation=cp",
            f"--target={tmp}/target",
            f"--index-url={INDEX_URL}",
            f"--report={report}",
            *requirements,
        ]
        # This machine's pip settings may add local wheel folders or constraints: the index alone answers.
        env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")} | {"PIP_CONFIG_FILE": os.devnull}
        done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
        if done.returncode != 0:
            missing = re.search(r"No matching distribution found for (\S+)", done.stderr)
            reason = f"no wheel for {missing.group(1)}" if missing else done.stderr.strip().splitlines()[-1]
            return [], reason
        installs = json.loads(report.read_text())["install"]
    return [item["download_info"]["url"].rsplit("/", 1)[1] for item in installs], None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--python", default="3.10,3.11,3.12", help="CPython versions, comma-separated")
    parser.add_argument("--extras", default="agent,tflite,genai", help="extras, comma-separated")
    parser.add_argument("--glibc", default="2.35", help="the board's glibc version (JetPack 6: 2.35)")
    args = parser.parse_args(argv)
    glibc = re.fullmatch(r"2\.(\d+)", args.glibc)
    if glibc is None:
        parser.error("--glibc must look like 2.35")
    project = tomllib.loads(PYPROJECT.read_text())["project"]
    failed = 0
    for python in args.python.split(","):
        base, _ = board_requirements(project["dependencies"], python)
        for extra in args.extras.split(","):
            own, left_out = board_requirements(project["optional-dependencies"][extra], python)
            wheels, problem = resolve(base + own, python, int(glibc.group(1)))
            if problem:
                failed += 1
                print(f"cp{python} [{extra}]: does not install: {problem}")
                continue
            names = {Requirement(text).name.lower() for text in own}
            listed = ", ".join(w for w in wheels if _name(w) in names) or "nothing of its own"
            print(f"cp{python} [{extra}]: installs ({len(wheels)} wheels with the base): {listed}")
            for text in left_out:
                _, why = resolve([text], python, int(glibc.group(1)))
                print(f"cp{python} [{extra}]:   left out by its marker: {text} ({why or 'a wheel exists'})")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
