"""``mammogan validate FILE [--set a.b=v ...]``: print the resolved experiment config."""
from __future__ import annotations

from mammogan_tf.config import dump_config, load_experiment


def add_override_argument(parser) -> None:
    """``--set key.path=value`` (repeatable), shared by every command that reads a config."""
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config field, e.g. --set prepare.seed=3 (repeatable)")


def _validate(args) -> int:
    config = load_experiment(args.file, args.overrides)
    print(dump_config(config), end="")
    return 0


def register(subparsers) -> None:
    parser = subparsers.add_parser("validate", help="check an experiment YAML and print it resolved")
    parser.add_argument("file", help="experiment YAML")
    add_override_argument(parser)
    parser.set_defaults(func=_validate)
