"""What runs inside a job's worker subprocess (`python -m agent.inference.worker`): the timing loop, the
generation benchmark and the llama-bench job (the primitives they share are in measure/).

Rule: imports runtimes/, measure/ and errors only, never the agent's service, jobs or storage: the worker
must start fast and must not import grpc.
"""
