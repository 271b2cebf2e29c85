"""Numbers from raw samples: statistics and intervals, significance, repetitions, energy and rails, thermal,
drift, validity, contention, the per-device summary, generation metrics, comparisons and run history.

Rule: analysis/ imports only store/ and fleet/ below it; never run/, report/, dashboard/ or cli/.
"""
