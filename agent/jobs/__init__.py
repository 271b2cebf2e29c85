"""The job runner's rooms: request checks (validation), the queue with its warm worker and journal retries
(runner), one job's phases (execution) with its settle rule (settle) and the worker's memory watch
(memory_limit), the worker subprocess (worker_process), multi-part jobs (parts) and the job's data (job).

Imports run one way: runner -> execution -> job, worker_process; validation stands alone. Nothing here
imports agent.service (it calls in).
"""
