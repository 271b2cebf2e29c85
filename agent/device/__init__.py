"""What the board is and how it is read: its description (`agent info`), device profiles, the sensor sampler,
and Jetson state (nvpmodel power mode, clocks).

Rule: imports sensors/, runtimes/ (to list them) and errors; never jobs/, service/, storage/.
"""
