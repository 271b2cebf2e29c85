"""One place that turns a gRPC error from an agent into one line a person can act on."""

from __future__ import annotations

import grpc


def describe_rpc_error(err: grpc.RpcError, address: str) -> str:
    code = err.code() if hasattr(err, "code") else None  # type: ignore[attr-defined]
    details = (err.details() if hasattr(err, "details") else "") or ""  # type: ignore[attr-defined]
    details = " ".join(details.split())
    if code == grpc.StatusCode.UNAVAILABLE and ("errors resolving" in details or "DNS resolution failed" in details):
        host = address.rsplit(":", 1)[0] if address.count(":") == 1 else address
        return f"the name {host} does not resolve: check the spelling, or give the agent's IP address"
    if code == grpc.StatusCode.UNAVAILABLE and "Connection refused" in details:
        return f"nothing listens at {address} (connection refused): is `agent serve` running there, on that port?"
    if code == grpc.StatusCode.UNAVAILABLE:
        return f"cannot reach the agent at {address} (is `agent serve` running there, and the port open?)"
    if code == grpc.StatusCode.UNAUTHENTICATED:
        return (
            f"the agent at {address} refused the host's credentials: set the agent's token with --token-file, "
            "EDGEPROF_TOKEN or the fleet's token_file"
        )
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return f"the agent at {address} did not answer in time"
    if code == grpc.StatusCode.UNIMPLEMENTED:
        return f"the agent at {address} is too old for this host (method not implemented): upgrade edgeprof there"
    name = code.name if code is not None else "error"
    return f"{details or name} ({name.lower()})"
