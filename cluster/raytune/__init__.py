"""The Ray Tune glue, the only part of paretune that imports ray: the trainable, the searcher
adapter, the recorder that turns reports into Parquet rows and tells, the schedulers, and the
runner that starts it all."""

from cluster.raytune.runner import run

__all__ = ["run"]
