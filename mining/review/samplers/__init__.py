"""The samplers of review queues: each picks images to review from a slice of the lake
and says why (mining.review.queues writes what they pick as a queue).

Every sampler is a ``Sampler`` spec (sampler_base.py): its name, help, options (with
defaults and help text) and ``run``, which takes a ``Slice`` (the ``--where``
predicate over ``images i JOIN predictions p``, a model version, and whether reviewed
images count) and a ``Request`` (its options' values, how many picks, the index) and
returns ``Picked``: the images, best first, one row per image, each with the
prediction that put it there, a score and a reason. docs/QUEUES.md defines each measure.

One module per family:

- ``spot_checks``: random-time (k per time window) and every-nth (every N-th prediction);
- ``uncertainty``: least-confidence, margin, entropy, from the per-class scores;
- ``reported_images``: feedback, the images people reported;
- ``suspect_labels``: label-errors, labels that disagree with the model or the neighbours;
- ``forgotten``: what a retrain forgot;
- ``novelty``: images far from everything reviewed or labelled, through the index;
- ``diversity``: k-center greedy over the slice (or a queue), through the index's vectors;
- ``object_novelty``: images whose detection box is farthest from the boxes reviewed, through the object index.

``SAMPLERS`` below is the registry: the CLI's ``queue`` subcommands, the UI's form and
mining.review.queues.make_queue are made from it. A new sampler is one module defining its
``Sampler`` and one entry in ``SAMPLERS`` (docs/CONTRIBUTING.md).
"""

from __future__ import annotations

from mining.core.errors import QueueError
from mining.review.samplers import (
    diversity,
    forgotten,
    novelty,
    object_novelty,
    reported_images,
    spot_checks,
    suspect_labels,
    uncertainty,
)
from mining.review.samplers.sampler_base import Option, Picked, Request, Sampler, Slice

__all__ = ["SAMPLERS", "Option", "Picked", "Request", "Sampler", "Slice", "sampler_for"]


def _by_name(*specs: Sampler) -> dict[str, Sampler]:
    names = [s.name for s in specs]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ValueError(f"two samplers are named {', '.join(twice)}")
    return {s.name: s for s in specs}


# name -> spec, in the order the CLI's help and the UI list them.
SAMPLERS: dict[str, Sampler] = _by_name(
    spot_checks.RANDOM_TIME,
    spot_checks.EVERY_NTH,
    uncertainty.LEAST_CONFIDENCE,
    uncertainty.MARGIN,
    uncertainty.ENTROPY,
    reported_images.FEEDBACK,
    suspect_labels.LABEL_ERRORS,
    forgotten.FORGOTTEN,
    novelty.NOVELTY,
    diversity.DIVERSITY,
    object_novelty.OBJECT_NOVELTY,
)


def sampler_for(name: str) -> Sampler:
    """The spec of the sampler named ``name``; QueueError listing the samplers for another name."""
    spec = SAMPLERS.get(name)
    if spec is None:
        raise QueueError(f"unknown sampler {name!r}; samplers: {', '.join(SAMPLERS)}")
    return spec
