"""Benchmarks (not tests): ``python -m bench`` runs them all (see bench/README.md);
``python -m bench.storage_bench`` runs the storage bench alone."""
