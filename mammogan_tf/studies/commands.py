"""``mammogan table GRID.yaml [--set k=v ...] [--out DIR]``: a paper's table from one command."""
from __future__ import annotations

from pathlib import Path

from mammogan_tf.commands.config_commands import add_override_argument


def _table(args) -> int:
    from mammogan_tf.studies.table import run_table

    content = run_table(args.grid, args.overrides, args.out, progress=not args.quiet)
    root = args.out or f"{content['grid']['output_dir']}/{content['name']}"
    print((Path(root) / "table.md").read_text(), end="")
    print(f"wrote {root}/table.md, table.csv, table.json and {len(content['figures'])} figures")
    return 0


def register(subparsers) -> None:
    parser = subparsers.add_parser("table", help="run (or resume) every cell of a grid YAML and write its table")
    parser.add_argument("grid", help="grid YAML (experiments/tables/*.yaml)")
    parser.add_argument("--out", help="output folder (default: <output_dir>/<name>)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    add_override_argument(parser)
    parser.set_defaults(func=_table)
