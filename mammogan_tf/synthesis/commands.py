"""``mammogan synthesize --run RUN_DIR --n N --out DIR [--format shards|png|dicom] ...``."""
from __future__ import annotations


def _synthesize(args) -> int:
    from mammogan_tf.synthesis.synthesize import run_synthesize

    manifest = run_synthesize(args.run, args.n, args.out, fmt=args.format, checkpoint=args.checkpoint,
                              class_name=args.class_name, seed=args.seed, batch_size=args.batch_size,
                              progress=not args.quiet)
    counts = manifest["counts"].get("train", manifest["counts"])
    per_class = ", ".join(f"{n} {name}" for name, n in sorted(counts.items()))
    print(f"wrote {per_class} synthetic patches ({args.format}) to {args.out} from "
          f"{manifest['inputs'][1]['path']} (sha256 {manifest['generator_sha256'][:16]}...)")
    return 0


def register(subparsers) -> None:
    parser = subparsers.add_parser("synthesize", help="trained run -> synthetic patches marked with provenance")
    parser.add_argument("--run", required=True, help="training run folder (mammogan-train output)")
    parser.add_argument("--checkpoint", default="best", help="best (default), last, or a checkpoint path")
    parser.add_argument("--n", type=int, required=True, help="number of patches")
    parser.add_argument("--class", dest="class_name", help="class name or index (conditional generators)")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--format", default="shards", choices=("shards", "png", "dicom"))
    parser.add_argument("--seed", type=int, default=0, help="latent stream seed (default 0)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(func=_synthesize)
