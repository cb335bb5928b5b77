"""Benchmark suites run by scripts/benchmark.py (one module per suite).

Each module defines `run(**kwargs) -> Iterator[dict]` yielding one JSON-able
record per measurement; scripts/benchmark.py imports the module named by
`--suite` and writes the records as JSON lines.
"""
