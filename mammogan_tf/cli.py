"""Command line: ``mammogan <stage> ...`` and ``mammogan-train EXPERIMENT.yaml``.

Each stage module exposes ``register(subparsers)`` that adds its sub-commands and sets
``func(args) -> int`` on them. User errors (``MammoganError``) print one line and return the
error's exit code; unexpected failures write the traceback to a log file, print its path and
return 1.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import importlib
import os
import sys
import tempfile
import traceback

from mammogan_tf import __version__
from mammogan_tf.errors import MammoganError

COMMAND_MODULES = (
    "mammogan_tf.commands.config_commands",
    "mammogan_tf.data.commands",
    "mammogan_tf.training.commands",
    "mammogan_tf.training.detection_commands",
    "mammogan_tf.synthesis.commands",
    "mammogan_tf.evaluation.commands",
    "mammogan_tf.studies.commands",
)
"""Modules that register sub-commands; a module not written yet is skipped."""


os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before any TensorFlow import: no C++ info lines


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mammogan", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"mammogan_tf {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as error:
            if error.name == name:
                continue
            raise
        module.register(subparsers)
    return parser


def _crash_log(exc: BaseException) -> str:
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    fd, path = tempfile.mkstemp(prefix=f"mammogan-crash-{stamp}-", suffix=".log")
    with os.fdopen(fd, "w") as handle:
        handle.write(f"mammogan_tf {__version__}\nargv: {sys.argv}\n\n")
        handle.write("".join(traceback.format_exception(exc)))
    return path


def run(parser: argparse.ArgumentParser, argv: list[str] | None) -> int:
    """Parse ``argv`` and run the chosen command with the CLI's error handling."""
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except MammoganError as error:
        print(f"error: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print("interrupted; completed work is kept and a re-run resumes", file=sys.stderr)
        return 130
    except Exception as error:  # noqa: BLE001 - the one place that turns crashes into a log
        path = _crash_log(error)
        print(f"error: unexpected failure ({type(error).__name__}: {error}); traceback in {path}",
              file=sys.stderr)
        return 1


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``mammogan``."""
    return run(build_parser(), argv)


def train_main(argv: list[str] | None = None) -> int:
    """Entry point of ``mammogan-train EXPERIMENT.yaml [...]`` (= ``mammogan train ...``)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    return run(build_parser(), ["train", *argv])
