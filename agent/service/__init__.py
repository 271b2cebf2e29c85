"""What the agent exposes: the gRPC server and servicer (tokens, stream slots, job ownership, the membership
proof), Prometheus metrics, zeroconf advertising, and `agent serve`, which assembles them from its flags.

Rule: the top room of agent/ below its CLI: it may import every other room; none imports it.
"""
