"""What host and agent must compute alike to trust each other: the membership proof and the client key header.

The Prove RPC (agent.proto) lets a host check that an agent found over zeroconf holds the fleet's token
without ever sending it: the agent answers with prove_mac over the host's nonce and the address the host
dialed (agent/service/membership.py says why the address is in it). Jobs belong to a credential plus the host's
client key, sent as the CLIENT_KEY_METADATA header (agent/service/ownership.py).
"""

from __future__ import annotations

import hashlib
import hmac

#: gRPC metadata key carrying the host's random client key (host/fleet/client_key.py).
CLIENT_KEY_METADATA = "edgeprof-client"
#: Domain separation for the membership proof's HMAC.
PROVE_DOMAIN = "edgeprof-prove-v1"


def prove_mac(token: str, nonce: str, dialed_address: str) -> str:
    """The answer to a challenge: lowercase hex HMAC-SHA256 keyed by the token."""
    message = f"{PROVE_DOMAIN}|{nonce}|{dialed_address}".encode()
    return hmac.new(token.encode(), message, hashlib.sha256).hexdigest()
