"""edgeprof host: the coordinator that compiles models, drives agents and turns samples into reports."""

__version__ = "0.1.0"
