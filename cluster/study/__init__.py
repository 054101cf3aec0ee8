"""A study on disk: its configuration (`config`), its searcher's state under a lock (`store`),
its results as Parquet read as Arrow (`results`; a row's columns spelled in `rows`, the front's
chart layout in `front`), warm start (`warm`) and resume after a crash (`resume`). No ray, no
remote services.

Inside cluster/ the parts import downwards only: study < remote < dashboard < raytune < cli
(tests/cluster/test_layout.py holds it)."""
