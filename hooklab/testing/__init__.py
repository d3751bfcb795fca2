"""Fault injection and stress tools used by the tests and benchmarks (not by the library)."""
