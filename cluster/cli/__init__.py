"""The `paretune` command line: run, resume, results, plot, serve (and spaces, searchers)."""

from cluster.cli.main import main

__all__ = ["main"]
