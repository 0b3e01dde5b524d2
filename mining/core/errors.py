"""The errors that are the user's to fix, in one hierarchy.

Every one derives from ``EdgemineError`` and carries a message that says what is
wrong and what to do. The CLI prints that message on one line and exits 2; the
UI shows it in an error box and keeps the page usable. Anything else that
escapes is a bug.

    EdgemineError
    ├── ConfigError        a configuration file or value
    ├── LakeError          the lake or one of its tables cannot be used as it is
    ├── QueryError         SQL from a user that DuckDB refused
    │   ├── ReadOnlyError  a statement that would change the lake, on a read-only connection
    │   └── QueryLimitError a query stopped by a [query] limit (time, memory, spill size)
    ├── InputError         an input file a job cannot read (nothing of it is written)
    ├── SearchError        a search or index request (unknown image, empty slice, no embeddings)
    │   └── SessionError   a narrowing session or step, or an action its state does not allow
    ├── SetError           a named set (no name, empty, unknown)
    ├── SourceError        an image source (set:, review:, session:, queue:, sql:) that names no images
    ├── ReviewError        a review decision (bad decision, no reviewer, unknown image)
    ├── ExportError        an export that cannot run as asked (empty source, unknown format, a target
    │                      holding another batch, Label Studio unreachable or refusing the token)
    ├── LabelError         a label file that cannot be read as its format (nothing of it was written)
    ├── QueueError         a review queue (unknown sampler or option, empty slice, missing scores)
    ├── SliceError         a slice (invalid SQL, unknown name) or metrics/drift/card input (no labels, no predictions)
    ├── AccessError        who is asking may not do this (a login that failed, a role too low)
    ├── ClusterError       a compute cluster (Ray) that cannot be used: not installed, an address that does not answer
    └── ModelError         the model cannot run as asked
        ├── DeviceError    the device asked for is not there
        └── WeightsError   the weights cannot be loaded
"""

from __future__ import annotations


class EdgemineError(Exception):
    """Base of every error the user can fix; the message says how."""


class ConfigError(EdgemineError, ValueError):
    """A configuration file or value is wrong; the message says which and how to fix it."""


class LakeError(EdgemineError):
    """The lake, or one of its tables, cannot be read or written as it is."""


class QueryError(EdgemineError):
    """SQL given by a user (a query, a --where slice) that DuckDB refused; the message is DuckDB's."""


class ReadOnlyError(QueryError, PermissionError):
    """A statement that would change something was refused on a read-only connection."""


class QueryLimitError(QueryError):
    """A query stopped by one of the config's ``[query]`` limits; the message names it and how to raise it."""


class InputError(EdgemineError, ValueError):
    """An input file a job cannot read as what it claims to be; nothing of it was written."""


class SearchError(EdgemineError, ValueError):
    """A bad search or index request (unknown image id, empty slice, no embeddings)."""


class SessionError(SearchError):
    """An unknown narrowing session or step, or an action the session's state does not allow."""


class SetError(EdgemineError, ValueError):
    """A named set that cannot be saved or found."""


class SourceError(EdgemineError, ValueError):
    """An image source spec that cannot be resolved: an unknown kind, a set or review that names
    no images, a query without an ``image_id`` column."""


class ReviewError(EdgemineError, ValueError):
    """A review decision that cannot be recorded."""


class QueueError(EdgemineError, ValueError):
    """A review queue that cannot be made or found: an unknown sampler or option, an empty
    slice, a sampler's input missing (per-class scores, labels, feedback)."""


class ClusterError(EdgemineError):
    """The compute cluster a job was to run on (``--runner ray``) cannot be used: Ray is not
    installed, or the cluster's address does not answer; the message says what to set."""


class ModelError(EdgemineError):
    """The model cannot run as asked."""


class DeviceError(ModelError):
    """The requested device is not available."""


class WeightsError(ModelError):
    """The weights could not be loaded; the message says how to get them."""


class AccessError(EdgemineError, PermissionError):
    """A login that failed, or an action the identity's role does not allow."""


class ExportError(EdgemineError, ValueError):
    """An export that cannot run as asked; nothing of the batch was committed."""


class LabelError(EdgemineError, ValueError):
    """A label file (or Label Studio project) that cannot be read as its format; nothing of it was written."""


class TrainingError(EdgemineError, ValueError):
    """A model that cannot be trained or found as asked (no labels, one class, an unknown or
    taken version); nothing of it was made visible."""

class SliceError(EdgemineError, ValueError):
    """A slice, metrics, drift or model card request that cannot run as asked."""


def command(*args: str) -> str:
    """``edgemine ARGS`` as a user can paste it into a shell, in messages that say what to run:
    each argument quoted as a shell needs (a set named ``it's`` or ``$(rm -rf ~)`` included)."""
    import shlex

    return "edgemine " + shlex.join(args)
