"""``mammogan synthesize --run RUN_DIR | --model EXPORT_DIR --n N --out DIR [--format ...]``, for a
cPGGAN run ``mammogan synthesize --run RUN [--n N] [--boxes FILE.csv] --out DIR``, for a
contextual run ``mammogan synthesize --run RUN --from PREPARE_DIR|PNG_DIR [--split S] [--n N]
[--reinsert PREPARE_DIR|TABLE] [--preview SHEET.png] --out DIR``, and
``mammogan export --run RUN_DIR --out DIR [--checkpoint best|last] [--onnx] [--evaluation DIR] [--vtt JSON]``."""
from __future__ import annotations


def _synthesize(args) -> int:
    from mammogan_tf.synthesis.synthesize import run_synthesize

    manifest = run_synthesize(args.run, args.n, args.out, fmt=args.format, checkpoint=args.checkpoint,
                              class_name=args.class_name, seed=args.seed, batch_size=args.batch_size,
                              progress=not args.quiet, model_dir=args.model, source=args.source,
                              split=args.split, reinsert=args.reinsert, boxes=args.boxes, preview=args.preview)
    if "boxes_from" in manifest:  # cpggan: whole images with boxes
        print(f"wrote {manifest['images']} synthetic whole images with {manifest['boxes']} lesion boxes "
              f"({manifest['boxes_from']}) and lesions.csv ({args.format}) to {args.out} "
              f"(sha256 {manifest['generator_sha256'][:16]}...)")
        return 0
    counts = manifest["counts"]
    counts = counts.get(manifest.get("source_split") or "train", counts) if "splits" in manifest else counts
    per_class = ", ".join(f"{n} {name}" for name, n in sorted(counts.items())) or "0"
    line = (f"wrote {per_class} synthetic patches ({args.format}) to {args.out} from "
            f"{manifest['inputs'][1]['path']} (sha256 {manifest['generator_sha256'][:16]}...)")
    if "discarded" in manifest:
        origin = f"split {manifest['source_split']}" if manifest["source_split"] else "the PNG folder"
        line += (f"; sources: {manifest['sources']} from {origin}, "
                 f"{manifest['discarded']['count']} discarded (post-processed lesion below 10 % of the patch)")
    if "reinserted" in manifest:
        line += f"; {len(manifest['reinserted'])} full images and lesions.csv in {args.out}/reinserted"
    if manifest.get("config", {}).get("preview"):
        line += f"; contact sheet {args.preview}"
    print(line)
    return 0


def _export(args) -> int:
    from mammogan_tf.synthesis.model_export import export_model

    manifest = export_model(args.run, args.out, checkpoint=args.checkpoint, onnx=args.onnx,
                            evaluation=args.evaluation, vtt=args.vtt)
    print(f"exported {manifest['checkpoint'].rsplit('/', 1)[-1]} (step {manifest['checkpoint_step']}, sha256 "
          f"{manifest['generator_sha256'][:16]}...) to {args.out} ({len(manifest['files'])} files)")
    print(f"model card: {args.out}/MODEL_CARD.md")
    return 0


def register(subparsers) -> None:
    parser = subparsers.add_parser("synthesize", help="trained run -> synthetic patches marked with provenance")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--run", help="training run folder (mammogan-train output)")
    source.add_argument("--model", help="a `mammogan export` folder instead of a run (same pixels and provenance)")
    parser.add_argument("--checkpoint", default="best", help="best (default), last, or a checkpoint path")
    parser.add_argument("--n", type=int, help="number of patches (contextual: at most N sources, default all)")
    parser.add_argument("--from", dest="source", help="contextual runs: a prepare output (its normal patches for "
                        "mode add, lesion patches for remove) or a folder of PNG patches")
    parser.add_argument("--split", help="split of the --from prepare output (default train)")
    parser.add_argument("--reinsert", help="contextual runs: a prepare output or lesion table of the full images; "
                        "writes them with the synthetic lesion blended back, plus lesions.csv")
    parser.add_argument("--preview", help="contextual runs: write a contact sheet PNG (outside --out) of the first "
                        "16 sources: source | lesion channel | input + lesion | written (or discarded)")
    parser.add_argument("--boxes", help="cpggan runs: CSV of boxes (image, x0, y0, x1, y1[, lesion_type]) in output "
                        "pixels, one image per distinct `image`; default: boxes sampled inside real breast masks")
    parser.add_argument("--class", dest="class_name", help="class name or index (conditional generators)")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--format", default="shards", choices=("shards", "png", "dicom"))
    parser.add_argument("--seed", type=int, default=0, help="latent stream seed (default 0)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(func=_synthesize)

    export = subparsers.add_parser("export", help="trained run -> SavedModel, .keras, [ONNX] and a model card",
                                   description="Export a run's generator for use without the run: generator.keras, "
                                               "saved_model/ (signature serving_default: latent [, class_label] -> "
                                               "image in [0, 1]), optional generator.onnx, model_card.json and "
                                               "MODEL_CARD.md.")
    export.add_argument("--run", required=True, help="training run folder (mammogan-train output)")
    export.add_argument("--checkpoint", default="best", help="best (default), last, or a checkpoint path")
    export.add_argument("--out", required=True, help="output folder")
    export.add_argument("--onnx", action="store_true", help="also write generator.onnx (needs tf2onnx)")
    export.add_argument("--evaluation", help="a `mammogan evaluate` output folder of this generator, for the card")
    export.add_argument("--vtt", help="a `mammogan vtt score --out` JSON of this generator, for the card")
    export.set_defaults(func=_export)
