"""Torture tools: SIGKILL loops, power-loss images from a crash-state model, a seeded
mutation fuzzer and a full-disk run (see benchmarks/torture.py and docs/recovery.md)."""
