"""Benchmarks of the queue: enqueue rate, drain rate, claim cost, pickup latency and memory.

Run ``python -m benchmarks run`` from the repository root; ``--help`` lists
the options. Every throughput figure is compared with a raw-driver loop that
does the least database work a one-task-at-a-time worker can do, measured in
the same run on the same database. See docs/performance.rst for the method.
"""
