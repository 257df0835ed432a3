"""Callables, publishers and flow builders used by the executor's tests.

Importable because the tests put its parent directory on sys.path and on the
PYTHONPATH the worker processes inherit.
"""
