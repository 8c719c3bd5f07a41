"""Helpers for tests and benchmarks: tiny random vision-language models built offline.

Nothing here is needed at run time on a robot; it exists so that every backend,
the server and the trainer can be exercised end to end without downloading a
checkpoint (see :mod:`rt2_ros.testing.tiny_vlm`).
"""
