"""What the agent keeps on disk: the journal of every measurement batch (and the emitter that writes it), the
content-addressed model cache with GenAI unpacking, and the lock that keeps one agent per data directory.

Rule: imports only device/ (the batch emitter takes the sampler's samples) and errors; never jobs/, service/.
"""
