"""Sensor backends (power, energy, temperature, memory) read by the agent's samplers, never the worker."""
