"""edgeprof agent: runs on a board, executes models in a worker subprocess and streams measurements."""

__version__ = "0.1.0"
