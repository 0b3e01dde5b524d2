"""Batch jobs that write the lake, and the `edgemine` command that runs them (jobs.cli)."""
