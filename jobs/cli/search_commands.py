"""Finding the edge cases: `similar`, `narrow start|pick|back|show|list|save`, `duplicates`."""

from __future__ import annotations

import argparse
import sys

import mining
from jobs.cli.common import UsageError, add_index_choice, index_config, open_db, print_result
from jobs.output import FORMATS, render_rows
from mining.core.config import Config
from mining.core.errors import command
from mining.core.sql import quote_literal


def add_similar(commands, add) -> None:
    similar = add(commands, "similar", cmd_similar,
                  "find the images most like some seeds (image ids or image files), or the boxes like some detections")
    similar.add_argument("seeds", nargs="+", metavar="IMAGE_ID_OR_FILE_OR_DETECTION_ID")
    similar.add_argument(
        "--not",
        dest="negatives",
        nargs="+",
        default=[],
        metavar="IMAGE_ID_OR_FILE",
        help="negatives: rank images unlike these lower (a classifier is fitted)",
    )
    similar.add_argument("-k", type=int, help="number of results (default: config mining.k, 20)")
    similar.add_argument(
        "--where",
        help=(
            "SQL predicate over images i LEFT JOIN predictions p, "
            "e.g. \"p.model_version = 'v7' AND confidence < 0.6\""
        ),
    )
    similar.add_argument("--save", metavar="SET", help="also save the results as the named set SET (the sets view)")
    similar.add_argument("--objects", action="store_true",
                         help="search the object index (detection boxes, embed --objects); the default when the "
                              "seeds are detection ids. Hits then carry detection_id, image_id and box; --where is "
                              "over detections d JOIN images i")
    similar.add_argument(
        "--format", choices=FORMATS, default="table", help="output format (default: table; --json means json)"
    )
    add_index_choice(similar)


def cmd_similar(args: argparse.Namespace, config: Config) -> int:
    from embed.files import file_embedder
    from mining.search.similar import hit_rows, hits_table

    config = index_config(args, config)
    if args.k is not None and args.k < 1:
        raise UsageError("-k must be at least 1")
    with open_db(config) as db:
        from mining.search.similar import names_detections

        objects = args.objects or names_detections(db, args.seeds)
        index = mining.open_index(db, backbone=args.backbone, weights=args.weights, config=config, objects=objects)
        hits = mining.find_similar(db, args.seeds, negatives=args.negatives, k=args.k, where=args.where, save=args.save,
                                   index=index, embed_files=file_embedder(config), config=config)
    if objects or args.json or args.format != "table":
        print_result(args, hits_table(hits, objects=objects), max_rows=len(hits))
    else:  # from Python values, not through Arrow: the command's start-up (tests/test_startup.py)
        sys.stdout.write(render_rows(["rank", "image_id", "score"], hit_rows(hits)))
    if args.save:
        sql = f"SELECT * FROM sets JOIN predictions USING (image_id) WHERE name = {quote_literal(args.save)}"
        print(f"saved as set {args.save!r}: {command('sql', sql)}", file=sys.stderr)
    return 0


def add_narrow(commands, add) -> None:
    narrow = commands.add_parser(
        "narrow", help="narrow from seeds to the edge case: cluster, pick, re-cluster (sessions saved in the lake)"
    )
    steps = narrow.add_subparsers(title="action", metavar="ACTION")
    start = add(steps, "start", cmd_narrow_start, "start a session: cluster the images nearest the seeds")
    start.add_argument("seeds", nargs="+", metavar="IMAGE_ID_OR_FILE", help="image ids or files; or detection ids "
                       "(detections.detection_id): the session then narrows boxes of the object index")
    start.add_argument("--not", dest="negatives", nargs="+", default=[], metavar="IMAGE_ID_OR_FILE")
    start.add_argument("--pool", type=int, help="images taken near the seeds (default: config mining.pool, 1000)")
    start.add_argument("--clusters", type=int, help="k-means clusters (default: config mining.clusters, 8)")
    start.add_argument("--where", help="restrict the pool to a SQL slice (as for similar)")
    start.add_argument("--name", help="session name (default: date and a random suffix)")
    start.add_argument("--objects", action="store_true",
                       help="narrow detection boxes (the object index, embed --objects); the default when the seeds "
                            "are detection ids. --where is then over detections d JOIN images i")
    add_index_choice(start)
    pick = add(steps, "pick", cmd_narrow_pick, "re-cluster inside the chosen clusters of the current step")
    pick.add_argument("session")
    pick.add_argument("picked", nargs="+", type=int, metavar="CLUSTER")
    pick.add_argument(
        "--clusters", type=int, help="k-means clusters (default: as in the current step, at most one per 10 images)"
    )
    back = add(steps, "back", cmd_narrow_back, "go back to the parent of the current step")
    back.add_argument("session")
    show = add(steps, "show", cmd_narrow_show, "show the clusters of the current (or a given) step")
    show.add_argument("session")
    show.add_argument("--step", type=int)
    add(steps, "list", cmd_narrow_list, "list the sessions")
    save = add(steps, "save", cmd_narrow_save, "save the current step (or some clusters of it) as a named set")
    save.add_argument("session")
    save.add_argument("set_name", metavar="SET")
    save.add_argument("--cluster", dest="clusters", type=int, nargs="+", help="only these clusters")


def cmd_narrow_start(args: argparse.Namespace, config: Config) -> int:
    from embed.files import file_embedder

    config = index_config(args, config)
    for name in ("pool", "clusters"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            raise UsageError(f"--{name} must be at least 1")
    with open_db(config) as db:
        from mining.search.similar import names_detections

        objects = args.objects or names_detections(db, args.seeds)
        index = mining.open_index(db, backbone=args.backbone, weights=args.weights, config=config, objects=objects)
        step = mining.start_narrowing(db, args.seeds, negatives=args.negatives, where=args.where, pool=args.pool,
                                      clusters=args.clusters, name=args.name, index=index,
                                      embed_files=file_embedder(config), config=config)
    print_result(args, step, _step_text)
    return 0


def cmd_narrow_pick(args: argparse.Namespace, config: Config) -> int:
    with open_db(config) as db:
        step = mining.pick_clusters(db, args.session, args.picked, k=args.clusters, config=config)
    print_result(args, step, _step_text)
    return 0


def cmd_narrow_back(args: argparse.Namespace, config: Config) -> int:
    with open_db(config) as db:
        step = mining.go_back(db, args.session, config=config)
    print_result(args, step, _step_text)
    return 0


def cmd_narrow_show(args: argparse.Namespace, config: Config) -> int:
    with open_db(config) as db:
        step = mining.show_step(db, args.session, args.step)
    print_result(args, step, _step_text)
    return 0


def cmd_narrow_list(args: argparse.Namespace, config: Config) -> int:
    with open_db(config) as db:
        print_result(args, mining.list_sessions(db))
    return 0


def cmd_narrow_save(args: argparse.Namespace, config: Config) -> int:
    from mining.search.sessions import save_session

    with open_db(config) as db:
        n = save_session(db, args.session, args.set_name, config.mining.user, args.clusters)
    print_result(args, {"set": args.set_name, "images": n, "session": args.session}, _saved_text)
    return 0


def _saved_text(saved: dict) -> None:
    print(f"saved {saved['images']} images as set {saved['set']!r}: "
          f"{command('sql', 'SELECT * FROM sets WHERE name = ' + quote_literal(saved['set']))}")


def _step_text(report) -> None:
    """A narrowing step's clusters, one line each, and what to run next (on stderr)."""
    crumbs = " > ".join(f"step {s}" for s in report.path)
    what = "boxes" if report.objects else "images"
    print(f"session {report.session}: {crumbs} ({report.pool_size} {what}; seeds: {', '.join(report.seeds)})")
    print(
        f"{'cluster':>7} {'size':>6} {'to seeds':>9} {'mean conf':>9}  "
        "labels (latest prediction)         nearest the centre"
    )
    for c in report.clusters:
        labels = ", ".join(f"{k} {v}" for k, v in sorted(c.labels.items(), key=lambda kv: -kv[1])[:3]) or "-"
        conf = f"{c.mean_confidence:.2f}" if c.mean_confidence is not None else "-"
        print(f"{c.cluster:>7} {c.size:>6} {c.seed_distance:>9.4f} {conf:>9}  {labels:<34} {' '.join(c.nearest[:3])}")
    session = command(report.session).removeprefix("edgemine ")
    print(f"next: edgemine narrow pick {session} CLUSTER... | edgemine narrow back {session} | "
          f"edgemine narrow save {session} SET_NAME", file=sys.stderr)


def add_duplicates(commands, add) -> None:
    duplicates = add(
        commands,
        "duplicates",
        cmd_duplicates,
        "group near-identical images (through the index) into the duplicates table",
    )
    duplicates.add_argument(
        "--threshold",
        type=float,
        help="least cosine similarity to a group's first image (default: config queues.duplicate_threshold, 0.98)",
    )
    add_index_choice(duplicates)


def cmd_duplicates(args: argparse.Namespace, config: Config) -> int:
    from jobs.progress import Progress

    config = index_config(args, config)
    with open_db(config) as db:
        index = mining.open_index(db, backbone=args.backbone, weights=args.weights, config=config)
        progress = Progress("duplicates", total=len(index), unit="images", enabled=not args.quiet)
        summary = mining.find_duplicates(db, threshold=args.threshold, index=index, progress=progress.update,
                                         config=config)
        progress.close()
    print_result(args, summary, _duplicates_text)
    return 0


def _duplicates_text(summary) -> None:
    print(f"{summary.images:,} images compared ({summary.backbone}/{summary.weights}): {summary.groups:,} groups of "
          f"near-duplicates (cosine >= {summary.threshold}), {summary.duplicates:,} images beyond each group's first, "
          f"{summary.seconds:.1f}s")
    print("  see: edgemine sql \"SELECT group_id, count(*) n FROM duplicates GROUP BY ALL ORDER BY n DESC\"; "
          "queues drop them with --drop-duplicates")
