"""Ray started (or joined) for a study, and every node of a cluster checked before the study
starts: what cannot work is refused up front, with one line naming the fix."""

from __future__ import annotations

import contextlib
import secrets
import signal
import tempfile
from pathlib import Path

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from cluster.study import storage
from cluster.study.custom import shipped
from cluster.study.errors import ConfigError

PREFLIGHT_S = 120  # a node that has not answered its preflight task by then is refused


def connect(study, *, address: str | None, verbose: bool, cpus: int | None) -> None:
    """`ray.init` unless Ray is up: local with no `address`. A study's own trainable ships to
    the workers (`runtime_env` `py_modules`), so it imports on nodes without its folder."""
    if ray.is_initialized():
        return
    modules = shipped(study.trainable, study.trainable_path) if study.trainable else []
    caller = signal.getsignal(signal.SIGTERM)  # Ray's own would replace it, and dump stacks
    ray.init(
        address=address or "local",
        num_cpus=cpus if address is None else None,
        include_dashboard=False,
        log_to_driver=verbose,
        logging_level="INFO" if verbose else "ERROR",
        runtime_env={"py_modules": modules} if modules else None,
    )
    if callable(caller):  # the CLI's: SIGTERM ends the run as Ctrl-C does
        signal.signal(signal.SIGTERM, caller)


def preflight(study) -> None:
    """One task on every alive node (`NodeAffinitySchedulingStrategy`): the trainers, or the
    study's trainable (the copy that ships, `connect`), import there, and the GPUs
    `gpus_per_trial` asks for exist (on some node, seen by torch where Ray lists them). Trials
    of the built-in trainer write their checkpoints (models, PBT snapshots, supernet epochs) to
    Tune's storage: a local study folder's `ray/` is refused when a node cannot read a file the
    driver wrote beside it (a URI's is checked by Tune). Raises `ConfigError`, naming the node
    and the fix."""
    nodes = [node for node in ray.nodes() if node["Alive"]]
    _check_gpus(study.gpus_per_trial, nodes)
    # Tune's checkpoints (models, snapshots) go to its storage: trials write to a local one
    local = not study.trainable and "storage_filesystem" not in storage.tune_storage(study.dir)
    ships = bool(study.trainable and shipped(study.trainable, study.trainable_path))
    with _marker(study.dir) if local else contextlib.nullcontext() as marker:
        checks = [
            _node_check.options(
                scheduling_strategy=NodeAffinitySchedulingStrategy(node["NodeID"], soft=False)
            ).remote(
                study.trainable,
                study.trainable_path,
                marker,
                shipped=ships,
                gpus=study.gpus_per_trial > 0 and node["Resources"].get("GPU", 0) > 0,
            )
            for node in nodes
        ]
        ready, late = ray.wait(checks, num_returns=len(checks), timeout=PREFLIGHT_S)
        answers = [ray.get(ref) if ref in ready else (None, True) for ref in checks]
    if late:
        raise ConfigError(f"{len(late)} node(s) did not answer the preflight in {PREFLIGHT_S} s")
    for node, (error, sees) in zip(nodes, answers, strict=True):
        where = f"node {node['NodeManagerAddress']}"
        if error:
            raise ConfigError(f"{where}: {error}")
        if not sees:
            raise ConfigError(
                f"{where} does not see the study folder {study.dir!r}, where trials save their "
                "models and snapshots: set dir: s3://bucket/path (or a folder every node mounts)"
            )


@contextlib.contextmanager
def _marker(folder: str):
    """A file made for the nodes to read, beside the study folder (or in it), then gone: its
    path and the token it holds."""
    anchor = Path(folder).expanduser().resolve()
    anchor = next(p for p in (anchor, *anchor.parents) if p.is_dir())
    token = secrets.token_hex(16)
    with tempfile.NamedTemporaryFile("w", dir=anchor, prefix=".paretune-node-check-") as marker:
        marker.write(token)
        marker.flush()
        yield marker.name, token


def _check_gpus(wanted: float, nodes: list[dict]) -> None:
    most = max((node["Resources"].get("GPU", 0) for node in nodes), default=0)
    if wanted > most:
        raise ConfigError(
            f"gpus_per_trial {wanted:g}: no node of the cluster has that many GPUs (the most on "
            f"one node: {most:g}); set gpus_per_trial: 0, or start nodes with GPUs"
        )


@ray.remote(num_cpus=0)
def _node_check(spec, folder, marker, *, shipped: bool, gpus: bool) -> tuple[str | None, bool]:
    """On one node: why a trial cannot run there (or None), and whether the driver's
    `marker` (path, token) reads there as the driver wrote it (no marker: nothing to see)."""
    sees = marker is None or _reads(*marker)
    try:
        if spec:
            from cluster.study.custom import load_trainable

            load_trainable(spec, folder, shipped=shipped)
        else:
            import trainers.trial  # noqa: F401
    except Exception as error:  # any failure to import is the answer
        fix = "put it in a package in trainable_path" if spec else "install paretune there"
        return f"{type(error).__name__}: {error}; {fix}", sees
    if gpus:
        import torch

        if torch.cuda.device_count() == 0:
            return "Ray lists GPUs but torch sees none: install a CUDA build of torch", sees
    return None, sees


def _reads(path: str, token: str) -> bool:
    """Whether `path` opens here and holds `token` (a node's own file of that name does not)."""
    try:
        with open(path) as file:
            return file.read() == token
    except OSError:
        return False
