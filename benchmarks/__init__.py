"""Benchmarks run by scripts/bench; each module has a main() and prints a table of side-by-side ratios."""
