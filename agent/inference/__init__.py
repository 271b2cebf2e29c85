"""What runs inside a job's worker subprocess (`python -m agent.inference.worker`): the timing loop, the
generation benchmark, the llama-bench job, inputs, warmup, the memory limit, and the frames it sends back.

Rule: imports runtimes/ and errors only, never the agent's service, jobs or storage: the worker must start
fast and must not import grpc.
"""
