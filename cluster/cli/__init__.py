"""The `paretune` command line: run, resume, results, plot, serve (and spaces, searchers)."""

from cluster.cli.commands import main

__all__ = ["main"]
