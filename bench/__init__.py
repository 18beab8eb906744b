"""Benchmarks: tether against LangGraph + SqliteSaver on the same machine, in one run.

``python -m bench`` runs every benchmark and writes ``docs/benchmarks.md``;
``python -m bench --quick`` is a smoke run with small sizes. Each module
measures one thing and returns plain samples; :mod:`bench.report` turns them
into the tables, so no number in the report is typed by hand.
"""
