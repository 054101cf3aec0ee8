"""Studies at scale, by concern: `raytune` (the only part that imports ray), `study` (a study on
disk: config, store, results, resume), `remote` (gRPC services) and `cli`.

`cluster.results` is `cluster.study.results`, the public way to load a study as Arrow;
`cluster.ParetuneSearch` is `cluster.raytune.ParetuneSearch`, a paretune searcher as a Ray Tune
search algorithm (importing it loads ray)."""


def __getattr__(name: str):
    if name == "results":
        from cluster.study import results

        return results
    if name == "ParetuneSearch":
        from cluster.raytune.adapter import ParetuneSearch

        return ParetuneSearch
    raise AttributeError(f"module 'cluster' has no attribute {name!r}")
