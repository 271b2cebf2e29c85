"""Who owns a job: a hash of the caller's credential and the host's own client key.

A fleet usually shares one token, so the token alone cannot tell two colleagues' hosts apart. Every
host therefore also keeps a random client key (host/fleet/client_key.py) and sends it as `edgeprof-client`
metadata on every call. The owner of a job is SHA-256 over (credential, client key), where the
credential is the bearer token the call carried or, with mutual TLS, the client certificate. The
agent stores only that hash: its journal holds neither tokens nor keys.

Another caller's job answers Attach, Cancel and Acknowledge with PERMISSION_DENIED rather than
NOT_FOUND. Job ids are 128 random bits, so admitting that one exists leaks nothing worth hiding, while
NOT_FOUND tells `host runs fetch` that the job is gone for good: a colleague's host fetching from a
shared store would then mark another host's pending job as lost. PERMISSION_DENIED leaves it pending
for its owner. Jobs journalled before owners existed have none and stay open to any authenticated caller.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

from protos.auth import CLIENT_KEY_METADATA

#: Metadata key of the host's client key.
_DOMAIN = b"edgeprof-owner-v1"


def owner_of(credential: bytes, client_key: bytes) -> str:
    """Hex SHA-256 of the credential and the client key, length-prefixed so no two pairs collide."""
    digest = hashlib.sha256(_DOMAIN)
    for part in (credential, client_key):
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.hexdigest()


def _as_bytes(value: Any) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode()


def caller_owner(context: Any) -> str:
    """The owner hash for the call `context` belongs to (a grpc.ServicerContext)."""
    credential = b""
    client_key = b""
    for key, value in context.invocation_metadata() or ():
        if key == "authorization":
            credential = _as_bytes(value)
        elif key == CLIENT_KEY_METADATA:
            client_key = _as_bytes(value)
    auth = context.auth_context() or {}
    certs = auth.get("x509_pem_cert") or []
    if certs:  # mutual TLS: the certificate the handshake verified is the credential
        credential = b"mtls:" + _as_bytes(certs[0]) + b"|" + credential
    return owner_of(credential, client_key)


def may_access(job_owner: str | None, caller: str) -> bool:
    """Ownerless jobs (from journals older than owners) are open to every authenticated caller."""
    return job_owner is None or hmac.compare_digest(job_owner.encode(), caller.encode())
