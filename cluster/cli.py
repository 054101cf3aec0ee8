"""The `paretune` command line."""

from __future__ import annotations

import argparse
import json
import sys

READY_SPACES = ("nb201", "chain", "training", "compression", "joint")


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

    for name in search.SEARCHERS:
        options = ", ".join(search.searcher_options(name)) or "-"
        print(f"{name:12s} options: {options}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="paretune", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    show = commands.add_parser("spaces", help="print a ready-made search space as JSON")
    show.add_argument("name", choices=READY_SPACES)
    show.set_defaults(func=_cmd_spaces)
    listing = commands.add_parser("searchers", help="list the searchers and their options")
    listing.set_defaults(func=_cmd_searchers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
