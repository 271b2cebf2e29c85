"""The host's side of fleet membership: a discovered agent gets no token and no model until it proves itself.

The reasoning is in agent/service/membership.py (and docs/security.md): with a fleet CA the TLS handshake is
the proof; otherwise a challenge-response on the unauthenticated `Prove` RPC, keyed by the fleet's
token, that never sends the token and that a rogue cannot relay to a real agent.
"""

from __future__ import annotations

import hmac
import secrets
from concurrent.futures import ThreadPoolExecutor

import grpc

from host.fleet.client import Credentials
from host.fleet.rpc_errors import describe_rpc_error
from protos import agent_pb2 as pb
from protos import agent_pb2_grpc
from protos.auth import prove_mac

#: How long one discovered agent may take to prove itself (connect + handshake or Prove).
PROVE_TIMEOUT_S = 5.0


def can_prove(credentials: Credentials) -> bool:
    """Whether these credentials give a way to tell fleet members from strangers at all."""
    return credentials.tls or credentials.token is not None


def _tls_handshake(address: str, credentials: Credentials, timeout_s: float) -> str | None:
    ssl = grpc.ssl_channel_credentials(
        root_certificates=credentials.root_ca_pem,
        private_key=credentials.client_key_pem,
        certificate_chain=credentials.client_cert_pem,
    )
    channel = grpc.secure_channel(address, ssl, options=[("grpc.enable_http_proxy", 0)])
    try:
        # READY means the handshake verified the agent's certificate against the fleet's CA; no call,
        # hence no metadata, has been sent yet.
        grpc.channel_ready_future(channel).result(timeout=timeout_s)
    except grpc.FutureTimeoutError:
        return f"no TLS handshake with a certificate from the fleet's CA within {timeout_s:g} s"
    finally:
        channel.close()
    return None


def _challenge(address: str, token: str, timeout_s: float) -> str | None:
    nonce = secrets.token_hex(32)
    channel = grpc.insecure_channel(address, options=[("grpc.enable_http_proxy", 0)])
    try:
        # No metadata at all on this call: a stranger learns nothing from it but a random nonce.
        reply = agent_pb2_grpc.AgentStub(channel).Prove(
            pb.ProveRequest(nonce=nonce, dialed_address=address), timeout=timeout_s
        )
    except grpc.RpcError as err:
        return f"did not answer the membership challenge: {describe_rpc_error(err, address)}"
    finally:
        channel.close()
    expected = prove_mac(token, nonce, address)
    if not hmac.compare_digest(reply.mac.encode(), expected.encode()):
        return "answered the membership challenge wrongly (it does not hold the fleet's token)"
    return None


def prove(address: str, credentials: Credentials, timeout_s: float = PROVE_TIMEOUT_S) -> str | None:
    """None when the agent at `address` proved it belongs to the fleet, else why not (one line)."""
    if credentials.tls:
        return _tls_handshake(address, credentials, timeout_s)
    if credentials.token is not None:
        return _challenge(address, credentials.token, timeout_s)
    return "the fleet has neither a token nor a TLS CA to check it against"


def prove_all(addresses: list[str], credentials: Credentials, timeout_s: float = PROVE_TIMEOUT_S) -> dict[str, str]:
    """Prove every address concurrently; returns {address: reason} for those that failed."""
    if not addresses:
        return {}
    with ThreadPoolExecutor(max_workers=min(16, len(addresses))) as pool:
        reasons = dict(zip(addresses, pool.map(lambda a: prove(a, credentials, timeout_s), addresses), strict=True))
    return {address: reason for address, reason in reasons.items() if reason is not None}
