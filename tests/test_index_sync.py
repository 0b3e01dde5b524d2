"""The index kept in step with the lake's embeddings (mining.search.index_sync), on a folder and on S3."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pyarrow as pa
import pytest

from mining.core.config import IndexConfig
from mining.core.errors import LakeError, SearchError
from mining.core.schema import embedding_matrix, embedding_rows
from mining.core.sql import LakeDB
from mining.search.index_sync import choose_embedding_set, index_lake
from tests.helpers import clustered, image_ids, write_embeddings, write_fixed_size_embeddings


@pytest.fixture
def vector_lake(lake):
    vectors = clustered(200, seed=1)
    write_embeddings(lake, image_ids(200), vectors, "part-a")
    return lake, vectors


def test_index_is_built_extended_and_rebuilt_as_embeddings_land(vector_lake):
    lake, vectors = vector_lake
    with LakeDB(lake) as db:
        index, summary = index_lake(db, IndexConfig())
        assert (summary.action, summary.vectors, summary.job) == ("built", 200, "index")
        assert index_lake(db, IndexConfig())[1].action == "up to date"

    more = clustered(50, seed=2)
    write_embeddings(lake, image_ids(50, start=200), more, "part-b")
    with LakeDB(lake) as db:
        index, summary = index_lake(db, IndexConfig())
    assert (summary.action, summary.added, len(index)) == ("extended", 50, 250)
    np.testing.assert_array_equal(index.vectors[index.positions(image_ids(1, start=210))], more[10:11])

    # An image embedded again (other vector) must not appear twice: rebuild, newest vector wins.
    write_embeddings(lake, image_ids(1, start=5), more[:1], "part-c")
    with LakeDB(lake) as db:
        index, summary = index_lake(db, IndexConfig())
        assert summary.action == "rebuilt" and len(index) == 250
        np.testing.assert_array_equal(index.vectors[index.positions(image_ids(1, start=5))][0], more[0])
        assert index_lake(db, IndexConfig(kind="ivf"))[1].action == "rebuilt"  # a kind change rebuilds


def test_no_embeddings_says_what_to_run(lake):
    with LakeDB(lake) as db, pytest.raises(SearchError, match="run edgemine embed"):
        choose_embedding_set(db, None, None)


def test_an_unknown_embedding_set_lists_the_lakes(vector_lake):
    lake, _ = vector_lake
    with LakeDB(lake) as db, pytest.raises(SearchError, match="the lake has: resnet18/random-seed0 \\(200\\)"):
        choose_embedding_set(db, "resnet18", "imagenet1k_v1")


def test_each_embedding_set_is_indexed_at_its_own_width_older_fixed_size_files_included(lake):
    """A lake written before widths varied (fixed-size 512-d files), then EfficientNet-Lite0's
    1280-d lists beside them: each set's index has its width, and says which set it is."""
    old, new = clustered(30, seed=3), clustered(20, seed=4, width=1280)
    write_fixed_size_embeddings(lake, image_ids(30), old)
    write_embeddings(
        lake, image_ids(20, start=100), new, "lite0", backbone="efficientnet-lite0", weights="imagenet1k_tf"
    )
    with LakeDB(lake) as db:
        resnet, _ = index_lake(db, IndexConfig(), backbone="resnet18")
        lite0, summary = index_lake(db, IndexConfig(), backbone="efficientnet-lite0")
    assert (resnet.backbone, resnet.weights, resnet.dim, len(resnet)) == ("resnet18", "random-seed0", 512, 30)
    assert (lite0.backbone, lite0.weights, lite0.dim, len(lite0)) == ("efficientnet-lite0", "imagenet1k_tf", 1280, 20)
    assert (summary.backbone, summary.weights) == ("efficientnet-lite0", "imagenet1k_tf")
    np.testing.assert_array_equal(resnet.vectors, old)
    np.testing.assert_array_equal(lite0.vectors, new)
    # More old-style rows later: the resnet index is extended from them.
    write_fixed_size_embeddings(lake, image_ids(5, start=50), clustered(5, seed=5))
    with LakeDB(lake) as db:
        grown, summary = index_lake(db, IndexConfig(), backbone="resnet18")
    assert (summary.action, len(grown), grown.dim) == ("extended", 35, 512)
    # New files of the other set only: nothing to add to this one.
    write_embeddings(lake, image_ids(3, start=200), clustered(3, seed=6, width=1280), "lite0-more",
                     backbone="efficientnet-lite0", weights="imagenet1k_tf")
    with LakeDB(lake) as db:
        same, summary = index_lake(db, IndexConfig(), backbone="resnet18")
    assert (summary.action, len(same), same.dim) == ("up to date", 35, 512)


def test_vectors_of_another_width_are_refused_at_write_time():
    with pytest.raises(LakeError, match="need 1280-d vectors.*shape \\(2, 512\\)"):
        embedding_rows(["a", "b"], "efficientnet-lite0", "imagenet1k_tf", clustered(2, seed=0), datetime.now(UTC),
                       width=1280)
    rows = embedding_rows(["a", "b"], "resnet18", "x", clustered(2, seed=0), datetime.now(UTC), width=512)
    assert rows.schema.field("embedding").type == pa.list_(pa.float32())
    assert embedding_matrix(rows["embedding"]).shape == (2, 512)
    mixed = pa.array([[0.0] * 512, [0.0] * 1280], pa.list_(pa.float32()))
    with pytest.raises(LakeError, match="512 to 1280"):
        embedding_matrix(mixed)
