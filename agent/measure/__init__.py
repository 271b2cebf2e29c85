"""The measurement primitives every timing path shares, in the worker and in native runners: the frames a
worker sends back, the warmup stability rule, model inputs (random or .npz), and resident memory from /proc.

Rule: the bottom room of agent/ with sensors/: imports only errors and protos/.
"""
