"""Which agents: the config file and its fleets, zeroconf discovery, membership proofs, the gRPC client and
its key, gRPC error translation, the embedded local agent and the parent-death launcher.

Rule: fleet/ is the bottom wing of host/: it imports no other wing (only protos/ and itself).
"""
