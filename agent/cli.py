"""The `agent` command line (argparse, so the daemon starts fast): serve, info, sensors."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path

from agent import __version__


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="agent", description="edgeprof agent: runs models on this board and streams measurements."
    )
    parser.add_argument("--version", action="version", version=f"edgeprof agent {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="serve profiling jobs over gRPC")
    serve.add_argument(
        "--listen",
        default="127.0.0.1:50051",
        metavar="HOST:PORT",
        help="address to listen on (default 127.0.0.1:50051; port 0 picks a free one)",
    )
    serve.add_argument("--profile", help="device profile (default: detected from the board)")
    serve.add_argument("--adb", metavar="SERIAL", help="serve the Android phone with this adb serial (one per agent)")
    serve.add_argument(
        "--delegate",
        default="",
        help="with --adb: the phone's delegate, xnnpack, gpu, nnapi, qnn, cpu or external:PATH",
    )
    serve.add_argument(
        "--power-meter", metavar="SPEC", help="external meter, e.g. um25c:/dev/rfcomm0 or csv:/dev/ttyACM0@115200"
    )
    serve.add_argument(
        "--llama-bench",
        metavar="PATH",
        help="measure GGUF models with this llama.cpp llama-bench binary instead of llama-cpp-python "
        "(default: the profile's [runners] llama_bench)",
    )
    serve.add_argument("--token-file", type=Path, help="file holding the bearer token hosts must present")
    serve.add_argument("--tls-cert", type=Path, help="server certificate (PEM)")
    serve.add_argument("--tls-key", type=Path, help="server private key (PEM)")
    serve.add_argument("--tls-client-ca", type=Path, help="CA that client certificates must chain to (mutual TLS)")
    serve.add_argument("--insecure", action="store_true", help="allow listening beyond loopback without token or TLS")
    serve.add_argument("--no-advertise", action="store_true", help="do not announce this agent over zeroconf")
    serve.add_argument("--tags", default="", help="comma-separated tags hosts can select fleets by")
    serve.add_argument("--data-dir", type=Path, help="model cache and journal (default ~/.local/share/edgeprof/agent)")
    serve.add_argument("--cache-limit-mb", type=float, default=2048, help="model cache size limit (LRU eviction)")
    serve.add_argument("--max-model-mb", type=float, default=1024, help="largest model accepted")
    serve.add_argument(
        "--disk-reserve-mb", type=float, default=256, help="disk space uploads must leave free (default 256)"
    )
    serve.add_argument(
        "--worker-memory-mb",
        type=int,
        metavar="N",
        help="resident memory (RSS) each job's worker may use, MB; past it the job ends out_of_memory "
        "(default: the device profile's; 0 = no limit)",
    )
    serve.add_argument("--sample-rate-hz", type=float, default=100.0, help="default sensor sampling rate")
    serve.add_argument("--max-queued", type=int, default=8, help="jobs that may wait behind the running one")
    serve.add_argument("--job-timeout-s", type=float, default=3600.0, help="default per-job timeout")
    serve.add_argument(
        "--metrics-listen",
        metavar="ADDR",
        help="serve Prometheus metrics (power, temperatures, queue, jobs, health) on HOST:PORT, e.g. 127.0.0.1:9464;"
        " with --token-file scrapers send Authorization: Bearer; beyond loopback needs a token, --tls-client-ca or"
        " --insecure",
    )
    serve.add_argument(
        "--power-mode",
        type=int,
        metavar="ID",
        help="Jetson: the nvpmodel power mode to set for each job and restore after it (needs root or sudo -n)",
    )
    serve.add_argument(
        "--warm-worker",
        action="store_true",
        help="keep a worker with the runtimes imported ready for the next job: faster job starts "
        "(1-2 s less on a Raspberry Pi) for about 60 MB more memory while idle",
    )

    info = sub.add_parser("info", help="describe this board: OS, CPU, memory, runtimes, profile")
    info.add_argument("--json", action="store_true", help="machine-readable output")
    info.add_argument("--profile", help="device profile (default: detected)")
    info.add_argument("--llama-bench", metavar="PATH", help="the llama-bench binary agent serve would use")

    sensors = sub.add_parser("sensors", help="detected sensors with a live reading of each")
    sensors.add_argument("--json", action="store_true", help="machine-readable output")
    sensors.add_argument("--profile", help="device profile (default: detected)")
    sensors.add_argument("--power-meter", metavar="SPEC", help="external meter, e.g. um25c:/dev/rfcomm0")

    from agent.adb.cli import add_parser

    add_parser(sub)
    return parser


def _info(profile: str | None, as_json: bool, llama_bench: str | None = None) -> int:
    from agent.device import board
    from agent.device.profiles import detect_profile_name, load_profile

    try:
        name = load_profile(profile or detect_profile_name()).name
    except ValueError as err:
        print(f"agent: {err}", file=sys.stderr)
        return 2
    found, missing = board.probe_via_subprocess()
    bench = llama_bench or load_profile(name).runners.get("llama_bench", "")
    if bench:
        found.append(board.llama_bench_runtime(bench))
    info = board.describe(name, found)
    # metadata repeats some top-level fields (kernel) for the host's use: said once here.
    info["metadata"] = {k: v for k, v in info["metadata"].items() if info.get(k) != v}
    if as_json:
        print(json.dumps({**info, "missing_runtimes": missing}, indent=2))
        return 0
    gib = info["ram_bytes"] / 1024**3
    print(f"host      {info['hostname']}  ({info['board'] or info['machine']})")
    print(f"os        {info['os']}, kernel {info['kernel']}")
    print(f"cpu       {info['cpu_model']}, {info['cpu_cores']} cores, {gib:.1f} GiB RAM")
    print(f"profile   {info['profile']}")
    for rt in info["runtimes"] or [{"name": "none found", "version": "", "providers": []}]:
        print(f"runtime   {rt['name']} {rt['version']}  {' '.join(rt['providers'])}")
    from agent.runtimes import RUNTIMES

    present = {rt["name"] for rt in info["runtimes"]}
    for absent in (name for name in RUNTIMES if name not in present):  # models of that kind cannot run here
        reason = missing.get(absent, "")
        print(_folded(f"runtime   {absent} missing" + (f": {reason}" if reason else "")))
    for key, value in sorted(info["metadata"].items()):
        print(f"{key:<9} {value}")
    return 0


def _folded(line: str) -> str:
    """A long line folded at word boundaries under its value's column on a terminal (a pipe gets it whole)."""
    if not sys.stdout.isatty():
        return line
    import shutil
    import textwrap

    width = shutil.get_terminal_size().columns
    return "\n".join(textwrap.wrap(line, width, subsequent_indent=" " * 10, break_on_hyphens=False)) or line


def _until_the_reader_leaves(command: Callable[[], int]) -> int:
    """Run a command that prints; when its reader went away (`agent info --json | head`) end quietly, as
    Unix tools cut off by SIGPIPE do (exit 141), instead of with a BrokenPipeError traceback."""
    try:
        code = command()
        sys.stdout.flush()
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # the interpreter's last flush fails too
        return 128 + signal.SIGPIPE
    return code


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    if args.command == "serve":
        from agent.service.serve import ServeOptions, default_data_dir, serve

        opts = ServeOptions(
            listen=args.listen,
            profile=args.profile,
            power_meter=args.power_meter,
            token_file=args.token_file,
            tls_cert=args.tls_cert,
            tls_key=args.tls_key,
            tls_client_ca=args.tls_client_ca,
            insecure=args.insecure,
            advertise=not args.no_advertise,
            tags=[t.strip() for t in args.tags.split(",") if t.strip()],
            # One agent per phone: each its own cache and journal unless told otherwise.
            data_dir=args.data_dir
            or (default_data_dir() / f"adb-{args.adb.replace(':', '_')}" if args.adb else default_data_dir()),
            cache_limit_mb=args.cache_limit_mb,
            max_model_mb=args.max_model_mb,
            disk_reserve_mb=args.disk_reserve_mb,
            worker_memory_mb=args.worker_memory_mb,
            sample_rate_hz=args.sample_rate_hz,
            max_queued=args.max_queued,
            job_timeout_s=args.job_timeout_s,
            warm_worker=args.warm_worker,
            adb=args.adb,
            delegate=args.delegate,
            metrics_listen=args.metrics_listen,
            power_mode=args.power_mode,
            llama_bench=args.llama_bench,
        )
        sys.exit(serve(opts))
    if args.command == "info":
        sys.exit(_until_the_reader_leaves(lambda: _info(args.profile, args.json, args.llama_bench)))
    if args.command == "sensors":
        from agent.sensors.cli import run_sensors_command

        sys.exit(_until_the_reader_leaves(lambda: run_sensors_command(args.profile, args.power_meter, args.json)))
    if args.command == "adb":
        from agent.adb.cli import run

        sys.exit(run(args))


if __name__ == "__main__":
    main()
