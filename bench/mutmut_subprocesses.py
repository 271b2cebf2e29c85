"""pytest plugin for bench/mutation.py: subprocesses the tests start run the code unmutated while mutmut maps tests.

mutmut learns which test reaches which function by running the tests with MUTANT_UNDER_TEST=stats. A test
that starts `host` or `agent` as a subprocess passes that variable on, and the subprocess's mutated code
then asks mutmut for its configuration, which it looks up in the subprocess's working directory (a test's
temp dir) and fails: the test fails and mutmut gives up. The mapping is kept in this process anyway, so
the variable is dropped from the environment here; mutmut keeps its own in-process copy of it. While a
mutant is tested the variable names the mutant and stays, so subprocesses run the mutant too.
"""

from __future__ import annotations

import os

import pytest


@pytest.hookimpl(tryfirst=True)
def pytest_sessionstart(session: pytest.Session) -> None:
    if os.environ.get("MUTANT_UNDER_TEST") == "stats":
        del os.environ["MUTANT_UNDER_TEST"]
