"""Entry point of the ``videoprism`` console script.

Each subcommand lives in a module of this package that defines
``register(subparsers)``; the module adds its parser and sets ``func`` to a
callable taking the parsed ``argparse.Namespace`` and returning an exit code.
Modules are imported lazily only for the parser, so ``videoprism --help`` stays
fast and one broken optional dependency does not take the whole CLI down.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from open_videoprism.errors import VideoPrismError

# Order here is the order in `videoprism --help`.
COMMAND_MODULES: tuple[str, ...] = (
    "convert",
    "embed",
    "synth",
    "check_data",
    "shards",
    "pretrain",
    "features",
    "eval",
    "reproduce",
    "download",
    "export",
    "search",  # index, search, serve
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="videoprism",
        description=(
            "VideoPrism in PyTorch: convert released checkpoints, extract features, "
            "generate the synthetic benchmark, pretrain (stage 1 contrastive, stage 2 "
            "masked distillation) and evaluate frozen backbones."
        ),
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(f"open_videoprism.cli.{name}").register(sub)
    return parser


def _fail(message: str) -> int:
    """Print one ``error:`` line (newlines folded, so a message can never look like a traceback)."""
    print("error: " + " ".join(message.split()), file=sys.stderr)
    return 2


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # key=value overrides may come after options (`pretrain --config X --out Y steps=10`); argparse
    # only collects positionals before them, so the rest arrive here.
    if extra and isinstance(getattr(args, "overrides", None), list) and all(
        "=" in e and not e.startswith("-") for e in extra
    ):
        args.overrides += extra
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except VideoPrismError as exc:
        return _fail(str(exc))
    except OSError as exc:
        # The environment refused a file operation (unwritable --out, a full disk, a folder where a
        # file was expected): a user error, named with its path. OSErrors without a path stay bugs.
        if exc.filename is None:
            raise
        return _fail(f"{exc.filename}: {exc.strerror or exc}; check the path and its permissions")
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
