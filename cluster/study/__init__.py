"""A study on disk: its configuration (`config`), its searcher's state under a lock (`store`),
its results as Parquet read as Arrow (`results`), and resume after a crash (`resume`). No ray."""
