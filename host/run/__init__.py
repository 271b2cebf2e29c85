"""Driving jobs and collecting their samples: profiling and sequences of repetitions, the collector and its
validation of what agents send, stream watch, interrupts, live progress and `runs fetch`.

Rule: run/ may import report/, analysis/, prepare/, store/ and fleet/; never dashboard/ or cli/.
"""
