"""Benchmarks: the saga engine against its substrate (`make bench`)."""
