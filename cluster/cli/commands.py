"""The `paretune` command line: run, resume, results, plot, dashboard (and spaces, searchers)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import textwrap
import warnings

from cluster.cli import export, studies
from cluster.cli import table as table_io

READY_SPACES = ("nb201", "chain", "mlp", "training", "compression", "joint")


def _space(name: str):
    import spaces

    if name == "joint":
        return spaces.joint(spaces.chain(), spaces.training(), spaces.compression())
    return getattr(spaces, name)()


def _cmd_spaces(args) -> int:
    print(json.dumps(_space(args.name).to_dict(), indent=2))
    return 0


def _cmd_searchers(args) -> int:
    import search

    for name, searcher in search.SEARCHERS.items():
        print(f"{name}: {(searcher.__doc__ or '').splitlines()[0].rstrip('.')}")
        for option, default in search.option_defaults(name).items():
            meaning = textwrap.shorten(search.option_meaning(name, option), 200)
            print(f"  {option} = {default!r}" + (f": {meaning}" if meaning else ""))
    return 0


def _print_front(study, table) -> None:
    from cluster.study import judge, results

    table = judge.rejudged(table, study.constraints)  # a row over a bound is never on it
    front = results.pareto(table, study.objectives).sort_by(study.objectives[0][0])
    objectives = ", ".join(f"{m} ({mode})" for m, mode in study.objectives)
    finished = sum(status != "running" for status in table["status"].to_pylist())
    print(f"\nPareto front of {study.name} over {objectives}: {front.num_rows} of {finished}")
    metrics = [m for m, _ in study.objectives]
    costs = [c for c in ("latency_ms", "size_bytes", "test_acc") if c not in metrics]
    shown = table_io.with_config_text(front)
    print(table_io.format_table(shown, ["trial", *metrics, *costs, "config"]))


def _cmd_run(args) -> int:
    from cluster.study import config as study_file
    from cluster.study import warm
    from cluster.study.defaults import measured_default

    study = study_file.read(args.config) if args.config else measured_default()
    if args.dir:
        study = study_file.Study.from_dict({**study.to_dict(), "dir": args.dir})
    study = warm.added(study, args.warm_start or [])  # earlier studies seeding the searcher
    study = warm.added(study, args.calibrate_from or [], "calibrate_from")  # its price's
    return _run_study(study, args, resume=False)


def _cmd_resume(args) -> int:
    from cluster.study.resume import load_study

    study = load_study(args.study)
    study = type(study).from_dict({**study.to_dict(), "dir": str(args.study)})
    return _run_study(study, args, resume=True)


# the signals that end a run as Ctrl-C does (exit 128 + the signal), and the log where Tune
# says, with a traceback, an error the study's recorder raised (an OS error: said in one line)
STOPS, TUNE_LOG = (signal.SIGINT, signal.SIGTERM), "ray.tune.execution.tune_controller"


def _run_study(study, args, *, resume: bool) -> int:
    # a stop raises KeyboardInterrupt, and is remembered: should a library swallow the exception
    # (Ray starting, Tune), the run still ends as stopped; the runner keeps it over Ray's SIGTERM
    stopped, errors = [], []

    def stop(signum, frame):
        stopped.append(signum)
        raise KeyboardInterrupt

    def quiet(record) -> bool:  # an OS error (a full disk) is kept out of Tune's log
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, OSError):
            errors.append(error)
        return not isinstance(error, OSError)

    previous = {number: signal.signal(number, stop) for number in STOPS}
    logging.getLogger(TUNE_LOG).addFilter(quiet)
    options = {"address": args.address, "verbose": args.verbose, "num_cpus": args.cpus}
    try:
        from cluster.raytune import runner

        table = runner.run(study, resume=resume, **options)
    except KeyboardInterrupt:
        stopped.append(signal.SIGINT)
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
        logging.getLogger(TUNE_LOG).removeFilter(quiet)
    if stopped:
        name = signal.Signals(stopped[0]).name
        print(
            f"\nstopped ({name}): `paretune resume {study.dir}` continues the study "
            "(finished trials are kept)",
            file=sys.stderr,
        )
        return 128 + stopped[0]
    if errors:
        raise errors[0]
    _print_front(study, table)
    front = ",".join(f"{metric}:{mode}" for metric, mode in study.objectives)
    print(f"\nthe study is in {study.dir}; next:")
    print(f"  paretune results {study.dir}    (every trial; --pareto {front} for the front)")
    print(f"  paretune plot {study.dir}       (the fronts against each cost, bounds drawn)")
    return 0


def _cmd_plot(args) -> int:
    from cluster.cli import plot
    from cluster.study.resume import load_study

    study = load_study(args.study)
    for path in plot.plot_study(args.study, study, out=args.out):
        print(f"wrote {path}")
    return 0


def _serve_until_stopped(server, what: str, host: str, port: int) -> int:
    print(f"{what} listening on {host}:{port} (Ctrl-C stops it)", flush=True)
    try:
        server.wait_for_termination()
    except KeyboardInterrupt:
        server.stop(grace=2).wait()
    return 0


def _security(args):
    from cluster.remote.wire import Security

    return Security.from_files(args.token_file, args.tls_cert, args.tls_key)


def _cmd_serve(args) -> int:
    from cluster.remote import service

    with studies.served(args.study) as folder:  # a URI's: staged here, mirrored back
        server, port = service.serve(
            folder,
            host=args.host,
            port=args.port,
            security=_security(args),
            max_mb=args.max_mb,
            lease_s=args.lease_s,
            on_expiry=args.on_expiry,
        )
        return _serve_until_stopped(server, f"study {args.study}", args.host, port)


def _cmd_device_serve(args) -> int:
    from cluster.remote import device

    limits = ("memory_mb", "timeout_s", "allow_torchscript")
    server, port = device.serve(
        host=args.host,
        port=args.port,
        security=_security(args),
        queue_limit=args.queue,
        max_mb=args.max_mb,
        limits=device.Limits(**{name: getattr(args, name) for name in limits}),
    )
    code = " RUNNING THE TORCHSCRIPT CODE CLIENTS SEND" if args.allow_torchscript else ""
    return _serve_until_stopped(server, f"device server{code}", args.host, port)


def _server_options(parser, *, max_mb: int) -> None:
    parser.add_argument(
        "--host", default="127.0.0.1", help="another host needs --token-file and TLS"
    )
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--token-file", help="a file holding the bearer token clients must send")
    parser.add_argument("--tls-cert", help="PEM certificate (with --tls-key) for TLS")
    parser.add_argument("--tls-key", help="PEM private key")
    parser.add_argument("--max-mb", type=int, default=max_mb, help="largest request, in MiB")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="paretune", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    show = commands.add_parser("spaces", help="print a ready-made search space as JSON")
    show.add_argument("name", choices=READY_SPACES)
    show.set_defaults(func=_cmd_spaces)
    listing = commands.add_parser("searchers", help="list the searchers and their options")
    listing.set_defaults(func=_cmd_searchers)
    for name, func in (("run", _cmd_run), ("resume", _cmd_resume)):
        sub = commands.add_parser(name, help=f"{name} a study on Ray Tune")
        if name == "run":
            sub.add_argument("config", nargs="?", help="a YAML or TOML study (default: built-in)")
            sub.add_argument("--dir", help="where the study lives (overrides the file's dir)")
            sub.add_argument("--warm-start", action="append", metavar="DIR", help="seed study")
            sub.add_argument(
                "--calibrate-from", action="append", metavar="DIR", help="study calibrating prices"
            )
        else:
            sub.add_argument("study", help="the study folder")
        sub.add_argument("--address", help="join a Ray cluster: auto, host:port or ray://...")
        sub.add_argument("--cpus", type=int, help="CPUs for a local Ray (default: all)")
        sub.add_argument("--verbose", action="store_true", help="Ray's own output too")
        sub.set_defaults(func=func)
    table_io.add_parser(commands)  # paretune results STUDY [--where ...]
    plot = commands.add_parser("plot", help="Pareto front and best-so-far curve as PNG")
    plot.add_argument("study")
    plot.add_argument("--out", help="folder for the PNG files (default: STUDY/plots)")
    plot.set_defaults(func=_cmd_plot)
    export.add_parser(commands)  # paretune export STUDY TRIAL --out model.onnx
    serve = commands.add_parser("serve", help="serve a study's ask/tell and results over gRPC")
    serve.add_argument("study", help="the study folder, or a study file (creates its folder)")
    _server_options(serve, max_mb=4)
    lease = "a trial with no heartbeat or tell this long is failed or asked again (--on-expiry)"
    serve.add_argument("--lease-s", type=float, default=300.0, help=lease)
    serve.add_argument("--on-expiry", choices=("fail", "requeue"), default="fail")
    serve.set_defaults(func=_cmd_serve)
    from cluster.dashboard import command as dashboard  # paretune dashboard STUDY [STUDY...]

    dashboard.add_parser(commands)
    device = commands.add_parser("device", help="the on-device latency server")
    device_commands = device.add_subparsers(dest="device_command", required=True)
    device_serve = device_commands.add_parser("serve", help="measure models sent over gRPC")
    _server_options(device_serve, max_mb=64)
    device_serve.add_argument("--queue", type=int, default=8, help="requests waiting at most")
    limit = "MiB for a request's largest input batch plus its model"
    device_serve.add_argument("--memory-mb", type=int, default=1024, help=limit)
    device_serve.add_argument("--timeout-s", type=float, default=120.0, help="per measurement")
    code = "also take TorchScript: RUNS CODE clients send (limited in memory and CPU, not in files)"
    device_serve.add_argument("--allow-torchscript", action="store_true", help=code)
    device_serve.set_defaults(func=_cmd_device_serve)
    return parser


def _warn(message, category, *rest, **options) -> None:
    print(f"paretune: warning: {message}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    warnings.showwarning = _warn
    try:
        studies.localize(args)  # a read-only command's study on a URI: a local copy
        return args.func(args)
    except BrokenPipeError:  # `paretune ... | head`: the reader left, which is no error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except (ValueError, OSError) as error:  # ConfigError included: a clear message, exit code 2
        print(f"paretune: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted: `paretune resume STUDY` continues", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
