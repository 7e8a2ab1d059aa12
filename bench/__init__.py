"""Benchmarks (`make bench`): they measure and write figures; they assert nothing. Tests live in tests/."""
