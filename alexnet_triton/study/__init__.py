"""The performance study's machinery: cost model, benchmark harness, traffic counter, report figures.

The CLIs in ``experiments/`` are thin wrappers around these modules; the tests
run them on the CPU.
"""
