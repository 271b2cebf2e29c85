"""Host configuration: edgeprof.toml, else $EDGEPROF_CONFIG, else ~/.config/edgeprof/config.toml.

Precedence for every setting: command-line flag > environment (EDGEPROF_*) > file > default.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from host.fleet.client import Credentials

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


class ConfigError(Exception):
    pass


#: The port `agent serve` listens on unless told otherwise: an agent address without a port means it.
DEFAULT_AGENT_PORT = 50051


def agent_address(text: str) -> str:
    """An agent's address as HOST:PORT: "jetson-01" → "jetson-01:50051", "fe80::1" → "[fe80::1]:50051".

    ConfigError (one line) for an empty address or a port that is not a number from 1 to 65535.
    """
    address = text.strip()
    if not address:
        raise ConfigError("an agent address is empty: give HOST or HOST:PORT, e.g. jetson-01.local:50051")
    if address.startswith("["):  # [v6] or [v6]:port
        host, _, rest = address[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
        if rest and not rest.startswith(":"):
            raise ConfigError(f"agent address '{text}' is not [IPv6]:PORT")
        host = f"[{host}]"
    elif address.count(":") > 1:  # a bare IPv6 address has no port
        host, port = f"[{address}]", ""
    else:
        host, _, port = address.partition(":")
    if not port:
        return f"{host}:{DEFAULT_AGENT_PORT}"
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ConfigError(f"agent address '{text}': the port must be a number from 1 to 65535")
    return f"{host}:{int(port)}"


@dataclass
class Fleet:
    name: str
    agents: list[str] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    token_file: Path | None = None
    tls_ca: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    discover_timeout_s: float = 3.0


@dataclass
class Config:
    path: Path | None = None
    fleets: dict[str, Fleet] = field(default_factory=dict)
    default_fleet: str | None = None
    grid_g_per_kwh: float | None = None
    raw: dict[str, Any] = field(default_factory=dict)


def config_path() -> Path | None:
    local = Path.cwd() / "edgeprof.toml"
    if local.is_file():
        return local
    env = os.environ.get("EDGEPROF_CONFIG")
    if env:
        path = Path(env).expanduser()
        if not path.is_file():
            raise ConfigError(f"EDGEPROF_CONFIG points at {path}, which does not exist")
        return path
    home = Path(os.environ.get("XDG_CONFIG_HOME", Path.home() / ".config")) / "edgeprof" / "config.toml"
    return home if home.is_file() else None


def _path(value: Any, base: Path) -> Path | None:
    if not value:
        return None
    path = Path(str(value)).expanduser()
    return path if path.is_absolute() else base / path


def load_config() -> Config:
    path = config_path()
    if path is None:
        return Config()
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as err:
        raise ConfigError(f"cannot read the config file {path}: {err}") from err
    fleets: dict[str, Fleet] = {}
    for name, spec in (data.get("fleets") or {}).items():
        if not isinstance(spec, dict):
            raise ConfigError(f"{path}: [fleets.{name}] must be a table")
        agents = spec.get("agents", [])
        tags = spec.get("tags", [])
        if not isinstance(agents, list) or not all(isinstance(a, str) for a in agents):
            raise ConfigError(f'{path}: fleets.{name}.agents must be a list of "host:port" strings')
        if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
            raise ConfigError(f"{path}: fleets.{name}.tags must be a list of strings")
        fleets[name] = Fleet(
            name=name,
            agents=[agent_address(a) for a in agents],
            tags=tags,
            token_file=_path(spec.get("token_file"), path.parent),
            tls_ca=_path(spec.get("tls_ca"), path.parent),
            tls_cert=_path(spec.get("tls_cert"), path.parent),
            tls_key=_path(spec.get("tls_key"), path.parent),
            discover_timeout_s=float(spec.get("discover_timeout_s", 3.0)),
        )
    default = data.get("default_fleet")
    if default is not None and default not in fleets:
        raise ConfigError(f"{path}: default_fleet '{default}' is not a fleet defined there")
    grid = data.get("grid_g_per_kwh")
    return Config(
        path=path, fleets=fleets, default_fleet=default, grid_g_per_kwh=float(grid) if grid else None, raw=data
    )


def read_token_file(path: Path) -> str:
    try:
        token = path.expanduser().read_text().strip()
    except OSError as err:
        raise ConfigError(f"cannot read the token file {path}: {err.strerror}") from err
    if not token:
        raise ConfigError(f"the token file {path} is empty")
    return token


def credentials_for(fleet: Fleet | None, token_file: Path | None = None, tls_ca: Path | None = None) -> Credentials:
    """--token-file > EDGEPROF_TOKEN > the fleet's token_file; TLS material from the flag or the fleet."""
    token: str | None = None
    if token_file is not None:
        token = read_token_file(token_file)
    elif os.environ.get("EDGEPROF_TOKEN"):
        token = os.environ["EDGEPROF_TOKEN"].strip()
    elif fleet is not None and fleet.token_file is not None:
        token = read_token_file(fleet.token_file)
    ca = tls_ca or (fleet.tls_ca if fleet else None)
    cert = fleet.tls_cert if fleet else None
    key = fleet.tls_key if fleet else None
    try:
        return Credentials(
            token=token,
            root_ca_pem=ca.read_bytes() if ca else None,
            client_cert_pem=cert.read_bytes() if cert else None,
            client_key_pem=key.read_bytes() if key else None,
        )
    except OSError as err:
        raise ConfigError(f"cannot read TLS file {err.filename}: {err.strerror}") from err
