"""The throw-away Django project the benchmarks run workers in.

Its settings read the database from BENCH_DATABASE_URL, so one project
serves every database a run measures.
"""
