"""The STUDY argument of the commands: a folder, a study file (`serve`) or a URI
(`cluster.study.storage`): read-only commands read a URI's study from a local copy, `serve`
stages it as a run does."""

from __future__ import annotations

import contextlib
from pathlib import Path

READ_ONLY = ("results", "plot", "export")  # the dashboard's feed copies its own


def localize(args) -> None:
    """Point `args.study` of a read-only command on a URI at a local copy of the study."""
    from cluster.study import storage

    if args.command not in READ_ONLY or not storage.is_uri(args.study):
        return
    if args.command == "plot" and not args.out:
        raise ValueError(f"plot {args.study}: give --out FOLDER (the study is on a URI)")
    args.study = storage.local_copy(args.study, models=args.command == "export")


@contextlib.contextmanager
def served(given: str):
    """The local folder `paretune serve` serves while the block runs: `given` itself; the
    folder of a study file (created as `run` creates it; a study already there is served as it
    is); a study on a URI (or a file's `dir:` on one) staged and mirrored back."""
    from cluster.study import storage
    from cluster.study.config import read
    from cluster.study.resume import load_study, prepare_dir

    if Path(given).is_file():
        study = read(given)
    elif storage.is_uri(given):
        study = load_study(given)
    else:
        yield given
        return
    if not storage.is_uri(study.dir):
        yield str(prepare_dir(study, resume=True))
        return
    with storage.staged(study, resume=True) as local:
        yield str(prepare_dir(local, resume=True))
