"""The job runner's rooms: request checks (validation), the queue with its warm worker and journal retries
(runner), one job's phases (execution), the worker subprocess (worker_process) and the job's data (job).

Imports run one way: runner -> execution -> job, worker_process; validation stands alone. Nothing here
imports agent.service.server or agent.service.servicer (they call in).
"""
