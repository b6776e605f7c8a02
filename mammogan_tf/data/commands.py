"""``mammogan prepare`` and ``mammogan phantom``."""
from __future__ import annotations

from mammogan_tf.commands.config_commands import add_override_argument
from mammogan_tf.config import load_config, set_field
from mammogan_tf.data.report import format_summary
from mammogan_tf.errors import ConfigError

EXIT_SOME_REJECTED = 3


def _prepare(args) -> int:
    from mammogan_tf.data.prepare import run_prepare

    config = load_config(args.config, args.overrides).prepare
    for field in ("images", "annotations", "format", "workers", "seed", "runner"):
        if getattr(args, field) is not None:
            set_field(config, field, getattr(args, field), f"--{field}")
    if args.beam_option:
        if config.runner != "beam":
            raise ConfigError(f"--beam-option {args.beam_option[0]}: needs --runner beam (or prepare.runner: beam)")
        set_field(config, "beam_options", config.beam_options + args.beam_option, "--beam-option")
    manifest = run_prepare(config, args.out, progress=not args.quiet)
    print(format_summary(manifest))
    print(f"wrote {args.out}/manifest.json and {args.out}/rejected.csv")
    return EXIT_SOME_REJECTED if manifest["summary"]["rejected"] else 0


def _phantom(args) -> int:
    from mammogan_tf.data.phantom import write_phantom

    table = write_phantom(args.out, n_images=args.n_images, seed=args.seed)
    print(f"wrote {args.n_images} phantom DICOM images and the lesion table {table}")
    return 0


def register(subparsers) -> None:
    prepare = subparsers.add_parser(
        "prepare", help="images + annotations -> patient-split patch shards",
        description="Exit codes: 0 all good; 3 output written but some inputs rejected "
                    "(see rejected.csv); 2 bad arguments, config or input (also: images without patient "
                    "identity, or no patch written at all; nothing is published); 1 unexpected failure.")
    prepare.add_argument("--images", help="folder of images (DICOM/PNG/PGM/TIFF)")
    prepare.add_argument("--annotations", help="annotation file (Info.txt, CBIS-DDSM CSV, ...)")
    prepare.add_argument("--format", help="mias, cbis-ddsm, vindr, inbreast, optimam or table, any case "
                                          "(default: detected from the file)")
    prepare.add_argument("--config", help="experiment YAML whose 'prepare' section to use")
    prepare.add_argument("--out", required=True, help="output folder")
    prepare.add_argument("--workers", type=int, help="worker processes (0 = one per core)")
    prepare.add_argument("--seed", type=int, help="random seed (patch sampling and splits)")
    prepare.add_argument("--runner", help="local (a process pool, the default) or beam (an Apache Beam "
                                          "pipeline; DirectRunner with --workers processes unless "
                                          "--beam-option runner=... names another); same shards")
    prepare.add_argument("--beam-option", action="append", metavar="KEY=VALUE",
                         help="a Beam pipeline option, repeatable (e.g. runner=FlinkRunner "
                              "flink_master=host:8081); added to prepare.beam_options")
    prepare.add_argument("--quiet", action="store_true", help="no progress bar")
    add_override_argument(prepare)
    prepare.set_defaults(func=_prepare)

    phantom = subparsers.add_parser("phantom", help="write the built-in synthetic demo mammograms")
    phantom.add_argument("--out", required=True, help="output folder")
    phantom.add_argument("--n-images", type=int, default=16, help="number of images (default 16)")
    phantom.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    phantom.set_defaults(func=_phantom)
