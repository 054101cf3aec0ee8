"""Everything that touches Ray: the Tune adapter, the study runner, results and the CLI."""
