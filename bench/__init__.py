"""Benchmarks of CityOps over its real HTTP interface.

- ``bench.loadgen``: a small HTTP/1.1 keep-alive load generator on raw asyncio protocols.
- ``bench.hub``: the data hub benchmark (``python -m bench.hub``, ``make bench``).
- ``bench.profile_summary``: top functions of a py-spy ``--format raw`` profile.
"""
