"""CLI: ``mammogan evaluate``, ``mammogan vtt make|score|serve|invite|export``."""
from __future__ import annotations

from pathlib import Path

from mammogan_tf.errors import ConfigError


def _types(text: str | None) -> list[str] | None:
    return [t.strip() for t in text.split(",") if t.strip()] if text else None


def _evaluate(args) -> int:
    from mammogan_tf.evaluation.report import run_evaluation

    metrics = run_evaluation(
        args.real, args.synthetic, args.out, backbone=args.backbone, train_real=args.train_real,
        real_split=args.real_split, synthetic_split=args.synthetic_split, train_split=args.train_split,
        lesion_types=_types(args.lesion_types), size=args.size, limit=args.limit, batch_size=args.batch_size,
        kid_subset_size=args.kid_subset_size, kid_subsets=args.kid_subsets, k=args.k,
        percentile=args.percentile, pixel_candidates=args.pixel_candidates, tsne=not args.no_tsne,
        frd=not args.no_frd, seed=args.seed, all_copies=args.all_copies, progress=not args.quiet)
    memo, compared = metrics["memorisation"], metrics["comparison"]
    frd = "" if metrics.get("frd") is None else f"  FRD {metrics['frd']:.4f}"
    print(f"FID {metrics['fid']:.4f}{frd}  KID {metrics['kid']['mean']:.5f} +- {metrics['kid']['std']:.5f}  "
          f"precision {metrics['precision']:.3f}  recall {metrics['recall']:.3f}  density {metrics['density']:.3f}  "
          f"coverage {metrics['coverage']:.3f}")
    print(f"compared with {metrics['counts']['real_lesion']} real "
          f"{', '.join(compared['real_lesion_types'] or ['folder'])} patches "
          f"({'originals only' if compared['copies'] == 'originals' else 'all copies'}; see report.md)")
    print(f"memorisation: {memo['n_flagged']} of {memo['n_synthetic']} synthetic images flagged")
    print(f"wrote {Path(args.out) / 'metrics.json'} and {Path(args.out) / 'report.md'}")
    return 0


def _vtt_make(args) -> int:
    from mammogan_tf.evaluation.inputs import load_image_set
    from mammogan_tf.evaluation.vtt import make_vtt

    real = load_image_set(args.real, args.split, args.size, progress=not args.quiet)
    real = real.subset(real.where_lesion(_types(args.lesion_types)))
    synthetic = load_image_set(args.synthetic, None, args.size, progress=not args.quiet)
    result = make_vtt(real, synthetic, args.out, n=args.n, seed=args.seed)
    print(f"wrote {2 * args.n} shuffled images for observers to {result['observers']}")
    print(f"answer key: {result['key']} (keep it away from the observers)")
    return 0


def _vtt_score(args) -> int:
    from mammogan_tf.evaluation.vtt import format_scores, read_answers, read_key, score_vtt

    key = read_key(args.key)
    names = [Path(p).stem for p in args.answers]
    if len(set(names)) != len(names):
        raise ConfigError("answer sheets must have distinct file names (the name is the observer)")
    scores = score_vtt(key, {name: read_answers(path, key) for name, path in zip(names, args.answers)})
    print(format_scores(scores))
    if args.out:
        from mammogan_tf.evaluation.report import json_safe
        from mammogan_tf.manifest import write_json_atomic

        write_json_atomic(args.out, json_safe(scores))
        print(f"wrote {args.out}")
    if args.sheet:
        from mammogan_tf.evaluation.vtt import write_fooled_sheet

        images = args.images or Path(args.key).parent / "observers" / "images"
        print(f"wrote {write_fooled_sheet(scores, images, args.sheet)} (synthetic images that fooled most observers)")
    return 0


def _vtt_serve(args) -> int:
    from mammogan_tf.evaluation.vtt_web.server import serve

    serve(args.study_dir, args.host, args.port, args.threads, confidence=args.confidence or None,
          lesion_types=_types(args.lesion_types), time_limit_s=args.time_limit,
          final_answers=False if args.allow_changes else None)
    return 0


def _vtt_invite(args) -> int:
    from mammogan_tf.evaluation.vtt_web.server import invite

    for name, role, url in invite(args.study_dir, args.readers, args.base_url, args.reissue, args.owner):
        print(f"{role:<6} {name:<20} {url}")
    print("links are shown once (only their hashes are stored); send each reader their own")
    return 0


def _vtt_export(args) -> int:
    from mammogan_tf.evaluation.vtt_web.server import export

    counts = export(args.study_dir, args.out)
    for name, n in counts.items():
        print(f"{name}: {n} answers")
    print(f"wrote {len(counts)} answer sheets to {args.out} (score: mammogan vtt score --key "
          f"{Path(args.study_dir) / 'key.csv'} {Path(args.out) / '*.csv'})")
    return 0


def register(subparsers) -> None:
    """Add ``evaluate`` and ``vtt make|score|serve|invite|export``."""
    ev = subparsers.add_parser("evaluate", help="FID, KID, precision/recall, memorisation, t-SNE and a report",
                               description="Compare synthetic with real patches; write metrics.json, "
                                           "report.md and figures to --out.")
    ev.add_argument("--real", required=True, help="prepared shards (folder or manifest.json) or folder of PNG/DICOM")
    ev.add_argument("--synthetic", required=True, help="synthetic shards or folder of PNG/DICOM")
    ev.add_argument("--train-real", help="real training shards for the memorisation check (default: --real)")
    ev.add_argument("--backbone", default="inception_v3",
                    help="inception_v3[:WEIGHTS.h5], classifier:PATH[:LAYER], keras:PATH[:LAYER], "
                         "savedmodel:PATH[:SIGNATURE], a .keras file or SavedModel folder, or random "
                         "(default: inception_v3)")
    ev.add_argument("--out", required=True, help="output folder")
    ev.add_argument("--real-split", default="train", help="split of --real shards (default: train)")
    ev.add_argument("--synthetic-split", default=None, help="split of --synthetic shards (default: all)")
    ev.add_argument("--train-split", default="train", help="split of --train-real shards (default: train)")
    ev.add_argument("--lesion-types", help="real lesion classes to compare, comma-separated (default: those the "
                                           "synthetic provenance names, else all but normal)")
    ev.add_argument("--all-copies", action="store_true",
                    help="compare every prepared patch of each real lesion, augmented copies included "
                         "(default: the original patch of each lesion only)")
    ev.add_argument("--size", type=int, help="resize every image to SIZE x SIZE first")
    ev.add_argument("--limit", type=int, help="use at most this many images per set (seeded)")
    ev.add_argument("--batch-size", type=int, default=32)
    ev.add_argument("--kid-subset-size", type=int, default=1000)
    ev.add_argument("--kid-subsets", type=int, default=100)
    ev.add_argument("--k", type=int, default=5, help="nearest neighbours for precision/recall/density/coverage")
    ev.add_argument("--percentile", type=float, default=1.0,
                    help="memorisation flag: closer than this percentile of real-to-real pairs (default: 1)")
    ev.add_argument("--pixel-candidates", type=int, default=50,
                    help="SSIM search among this many nearest real images in pixel L2 (default: 50)")
    ev.add_argument("--no-tsne", action="store_true", help="skip the t-SNE figure")
    ev.add_argument("--no-frd", action="store_true", help="skip the Frechet Radiomics Distance")
    ev.add_argument("--seed", type=int, default=0)
    ev.add_argument("--quiet", action="store_true", help="no progress bars")
    ev.set_defaults(func=_evaluate)


    vtt = subparsers.add_parser("vtt", help="visual Turing test: make an image set, serve it to readers, score them")
    sub = vtt.add_subparsers(dest="vtt_command", metavar="COMMAND")
    make = sub.add_parser("make", help="write shuffled anonymised real+synthetic images and an answer key")
    make.add_argument("--real", required=True, help="folder of PNG/DICOM or prepared shards")
    make.add_argument("--synthetic", required=True, help="folder of PNG/DICOM or synthetic shards")
    make.add_argument("--n", type=int, default=75, help="images of each kind (default: 75, as Alyafi)")
    make.add_argument("--out", required=True, help="output folder (observers/ and key.csv)")
    make.add_argument("--split", default=None, help="split of --real shards (default: all)")
    make.add_argument("--lesion-types", help="real shard classes to draw from (default: all but normal)")
    make.add_argument("--size", type=int, help="resize every image to SIZE x SIZE")
    make.add_argument("--seed", type=int, default=0)
    make.add_argument("--quiet", action="store_true")
    make.set_defaults(func=_vtt_make)
    score = sub.add_parser("score", help="accuracy, sensitivity, specificity per observer; Cohen's kappa")
    score.add_argument("--key", required=True, help="key.csv written by vtt make")
    score.add_argument("answers", nargs="+", help="one answer sheet (CSV: image,answer) per observer")
    score.add_argument("--out", help="also write the scores as JSON here")
    score.add_argument("--sheet", help="write a contact sheet (PNG) of the synthetic images that fooled most observers")
    score.add_argument("--images", help="the study's images for --sheet (default: observers/images beside --key)")
    score.set_defaults(func=_vtt_score)
    _register_web(sub)
    vtt.set_defaults(func=lambda args: vtt.print_help() or 2)


def _register_web(sub) -> None:
    """``vtt serve|invite|export``: the reader study in the browser (``evaluation.vtt_web``)."""
    from mammogan_tf.evaluation.vtt_web import DEFAULT_PORT

    serve = sub.add_parser("serve", help="serve a study to readers in the browser",
                           description="Serve STUDY_DIR (written by vtt make) as a web reader study; answers go "
                                       "to STUDY_DIR/vtt.sqlite3. Reading options override study.json.")
    serve.add_argument("study_dir", metavar="STUDY_DIR")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1, loopback only)")
    serve.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"default: {DEFAULT_PORT}")
    serve.add_argument("--threads", type=int, default=8, help="worker threads (default: 8)")
    serve.add_argument("--confidence", action="store_true", help="also ask a confidence 1-5")
    serve.add_argument("--lesion-types", help="also ask a lesion type from this comma-separated list")
    serve.add_argument("--time-limit", type=float, help="hide each image after this many seconds")
    serve.add_argument("--allow-changes", action="store_true", help="answers can be changed (default: final)")
    serve.set_defaults(func=_vtt_serve)
    invite = sub.add_parser("invite", help="add readers and print one personal link each",
                            description="Print one link per new reader (and the owner's results link when it "
                                        "is new); tokens are stored hashed, so links are shown only once.")
    invite.add_argument("study_dir", metavar="STUDY_DIR")
    invite.add_argument("--readers", required=True, help="how many readers, or their names comma-separated")
    invite.add_argument("--base-url", default=f"http://127.0.0.1:{DEFAULT_PORT}",
                        help="where readers reach the server (default: %(default)s)")
    invite.add_argument("--reissue", action="store_true", help="new links for readers already invited")
    invite.add_argument("--owner", action="store_true", help="also make a new owner link (the old one stops working)")
    invite.set_defaults(func=_vtt_invite)
    export = sub.add_parser("export", help="write the answers as one CSV per reader for vtt score")
    export.add_argument("study_dir", metavar="STUDY_DIR")
    export.add_argument("--out", required=True, help="output folder (READER.csv per reader)")
    export.set_defaults(func=_vtt_export)
