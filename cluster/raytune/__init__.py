"""The Ray Tune glue, the only part of paretune that imports ray: the trainable, the searcher
adapter, the recorder that turns reports into Parquet rows and tells, the schedulers, and the
runner that starts it all.

`ParetuneSearch` (`cluster.raytune.adapter`) is any paretune searcher as a Ray Tune search
algorithm, for a user's own `tune.Tuner`. Both names load lazily: a Ray worker that imports a
trial function from here loads only what that function needs."""

__all__ = ["ParetuneSearch", "run"]


def __getattr__(name: str):
    if name == "ParetuneSearch":
        from cluster.raytune.adapter import ParetuneSearch

        return ParetuneSearch
    if name == "run":
        from cluster.raytune.runner import run

        return run
    raise AttributeError(f"module 'cluster.raytune' has no attribute {name!r}")
