"""Reviewing images: `review accept|reject|list|save`, and review queues: `queue SAMPLER|list|show`."""

from __future__ import annotations

import argparse
import sys

import mining
from jobs.cli.common import open_db, print_result
from jobs.output import FORMATS, write_rows
from mining.core.config import Config
from mining.core.errors import command
from mining.core.sql import quote_literal


def add_review(commands, add) -> None:
    review = commands.add_parser(
        "review", help="accept or reject images; accepted ones become a named set (decisions saved in the lake)"
    )
    actions = review.add_subparsers(title="action", metavar="ACTION")
    for decision in ("accept", "reject"):
        p = add(
            actions,
            decision,
            cmd_review_decide,
            f"{decision} images in a review (recorded with your name and the time)",
        )
        p.set_defaults(decision=decision)
        p.add_argument("review", help="the review's name; its accepted images become the set of that name")
        p.add_argument("image_ids", nargs="+", metavar="IMAGE_ID")
        p.add_argument(
            "--source", help="where the images were found, e.g. narrow:SESSION/STEP (kept with the decision)"
        )
    add(actions, "list", cmd_review_list, "list the reviews: accepted, rejected, who, when")
    publish = add(actions, "save", cmd_review_save, "publish a review's accepted images as a named set")
    publish.add_argument("review")
    publish.add_argument("--as", dest="set_name", metavar="SET", help="the set's name (default: the review's)")


def cmd_review_decide(args: argparse.Namespace, config: Config) -> int:
    with open_db(config) as db:
        n = mining.decide(db, args.review, args.image_ids, args.decision, source=args.source, config=config)
    decided = {"review": args.review, "decision": args.decision, "images": n, "reviewer": config.mining.user}
    print_result(args, decided, _decided_text)
    return 0


def _decided_text(decided: dict) -> None:
    print(f"{decided['decision']}ed {decided['images']} images in review {decided['review']!r} "
          f"as {decided['reviewer']}")


def cmd_review_list(args: argparse.Namespace, config: Config) -> int:
    from mining.review.decisions import list_reviews

    with open_db(config) as db:
        print_result(args, list_reviews(db))
    return 0


def cmd_review_save(args: argparse.Namespace, config: Config) -> int:
    name = args.set_name or args.review
    with open_db(config) as db:
        n = mining.save_review(db, args.review, name=name, config=config)
    print_result(args, {"set": name, "images": n, "review": args.review}, _published_text)
    return 0


def _published_text(saved: dict) -> None:
    print(f"saved {saved['images']} accepted images as set {saved['set']!r}: "
          f"{command('sql', 'SELECT * FROM sets WHERE name = ' + quote_literal(saved['set']))}")


def add_queue(commands, add, samplers: bool) -> None:
    """`edgemine queue SAMPLER|list|show`: one subcommand per sampler, its flags from
    mining.review.samplers.SAMPLERS (the registry), built only when the command line says queue (importing the
    samplers is a tenth of a second of every other command's start-up)."""
    queue = commands.add_parser(
        "queue", help="make a review queue with a sampler, or list and show queues (saved in the lake)"
    )
    if not samplers:
        return
    from mining.review.queues import COMMON
    from mining.review.samplers import SAMPLERS

    kinds = queue.add_subparsers(title="sampler", metavar="SAMPLER")
    for spec in SAMPLERS.values():
        p = add(kinds, spec.name, cmd_queue, spec.help)
        p.set_defaults(sampler=spec.name, allowed_flags=f"options of queue {spec.name}: " + ", ".join(
            ["--name", *("--" + c.replace("_", "-") for c in COMMON), *(o.flag for o in spec.options)]))
        p.add_argument(
            "--name", required=True, help="the queue's name; made again, it becomes a new version (the old one is kept)"
        )
        p.add_argument("--where", help="SQL predicate over images i JOIN predictions p, e.g. \"p.camera = 'cam-07'\"")
        p.add_argument("--model-version", help="only this model version's predictions")
        limit = (
            "queue size (default: config queues.limit, 100)"
            if spec.ranked
            else "at most this many (default: every pick)"
        )
        p.add_argument("--limit", type=int, help=limit)
        p.add_argument(
            "--diverse",
            action="store_true",
            help="keep a diverse subset (k-center greedy on the embeddings) "
            "of the sampler's best queues.diverse_pool x limit",
        )
        p.add_argument("--include-reviewed", action="store_true", help="keep images already reviewed or exported")
        p.add_argument(
            "--drop-duplicates",
            action="store_true",
            help="keep one image per near-duplicate group (edgemine duplicates)",
        )
        for option in spec.options:
            if option.type is bool:
                p.add_argument(
                    option.flag, dest=f"opt_{option.name}", action="store_true", default=None, help=option.help
                )
            else:
                default = f" (default: {option.default})" if option.default is not None else ""
                p.add_argument(option.flag, dest=f"opt_{option.name}", type=option.type, choices=option.choices,
                               help=option.help + default)
    add(kinds, "list", cmd_queue_list, "list the queues: sampler, version, images, how many are reviewed")
    show = add(kinds, "show", cmd_queue_show, "show a queue's images in order, with score, reason and decision")
    show.add_argument("queue")
    show.add_argument("--version", type=int, help="an earlier version (default: the latest)")
    show.add_argument(
        "--format", choices=FORMATS, default="table", help="output format (default: table; --json means json)"
    )


def cmd_queue(args: argparse.Namespace, config: Config) -> int:
    from mining.review.samplers import SAMPLERS

    options = {o.name: getattr(args, f"opt_{o.name}") for o in SAMPLERS[args.sampler].options}
    with open_db(config) as db:
        summary = mining.make_queue(db, args.sampler, args.name, where=args.where, model_version=args.model_version,
                                    limit=args.limit, diverse=args.diverse, include_reviewed=args.include_reviewed,
                                    drop_duplicates=args.drop_duplicates, config=config, **options)
        top = mining.show_queue(db, args.name, version=summary.version)
    print_result(args, summary, lambda made: _made_text(made, top))
    return 0


def _made_text(summary, queue) -> None:
    """The queue made, its first ten images, and what to run next (on stderr)."""
    print(f"queue {summary.queue!r} version {summary.version}: {summary.images} images by {summary.sampler} "
          f"from {summary.candidates:,} candidates ({summary.excluded:,} already reviewed or exported left out"
          f"{f', {summary.duplicates_dropped} near-duplicates dropped' if summary.duplicates_dropped else ''}), "
          f"{summary.seconds:.1f}s")
    for note in summary.notes:
        print(f"  note: {note}")
    top = queue.select(["rank", "image_id", "score", "reason"]).slice(0, 10)
    write_rows(top, "table", sys.stdout, max_rows=10)
    print(
        f"next: {command('queue', 'show', summary.queue)} | review it in the UI (Review, images from: Queue)",
        file=sys.stderr,
    )


def cmd_queue_list(args: argparse.Namespace, config: Config) -> int:
    with open_db(config) as db:
        print_result(args, mining.list_queues(db))
    return 0


def cmd_queue_show(args: argparse.Namespace, config: Config) -> int:
    with open_db(config) as db:
        rows = mining.show_queue(db, args.queue, version=args.version)
    print_result(args, rows.select(["rank", "image_id", "score", "reason", "decision"]), max_rows=rows.num_rows)
    return 0
