"""`host runs fetch RUN|--all`: collect finished jobs from agents after the host crashed or gave up."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from host.cli.common import TlsCaOption, fail, open_store
from host.cli.runs import runs_app
from host.fleet.client import Credentials
from host.fleet.config import Config, ConfigError, credentials_for, load_config
from host.report.escape import terminal_text
from host.run.fetch import FetchOutcome, fetch_runs
from host.store.sqlite import PendingJob, StoreError


def _credentials(config: Config, token_file: Path | None, tls_ca: Path | None) -> dict[str, Credentials]:
    """Per agent address: the credentials of a fleet that lists it, else the flags and environment."""
    by_address: dict[str, Credentials] = {}
    for fleet in config.fleets.values():
        creds = credentials_for(fleet, token_file, tls_ca)
        for address in fleet.agents:
            by_address.setdefault(address, creds)
    by_address[""] = credentials_for(None, token_file, tls_ca)
    return by_address


@runs_app.command("fetch")
def runs_fetch(
    run: Annotated[str | None, typer.Argument(help="run id (a prefix is enough)")] = None,
    all_runs: Annotated[bool, typer.Option("--all", help="fetch the pending jobs of every run")] = False,
    token_file: Annotated[Path | None, typer.Option(help="bearer token for the agents")] = None,
    tls_ca: TlsCaOption = None,
    reconnect: Annotated[float, typer.Option(min=0, help="seconds to keep trying an unreachable agent")] = 10.0,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """Collect jobs a host started but never stored, merge them into their run, and save it."""
    if (run is None) == (not all_runs):
        fail("give a RUN id or --all (not both)")
    try:
        creds = _credentials(load_config(), token_file, tls_ca)
    except ConfigError as err:
        fail(str(err))

    def credentials(job: PendingJob) -> Credentials:
        return creds.get(job.address, creds[""])

    def report(o: FetchOutcome) -> None:
        if not as_json:
            detail = f"{o.n_inferences} inferences" if o.status == "ok" else o.message
            print(terminal_text(f"{o.run_id}  {o.device}  {o.status}  {detail}"))  # the agent's error text is inert

    store = open_store()
    try:
        results = fetch_runs(store, None if all_runs else run, credentials, reconnect_s=reconnect, on_outcome=report)
    except StoreError as err:
        fail(str(err))
    outcomes = [o for r in results for o in r.outcomes]
    if as_json:
        print(json.dumps([vars(o) for o in outcomes], indent=2))
    elif not outcomes:
        print(f"no pending jobs in {store.path}")
    left = [o for o in outcomes if o.status == "left"]
    if left:
        runs = " ".join(sorted({o.run_id for o in left}))
        fail(
            f"{len(left)} job(s) not collected yet, still pending: run `host runs fetch` again later,"
            f" or give them up with `host runs rm {runs}`"
        )
    raise typer.Exit(1 if any(o.status != "ok" for o in outcomes) else 0)
