"""The index kept in step with the lake's embeddings (mining.index_sync), on a folder and on S3."""

from __future__ import annotations

import numpy as np
import pytest

from mining.config import IndexConfig
from mining.errors import SearchError
from mining.index_sync import choose_embedding_set, index_lake
from mining.sql import LakeDB
from tests.helpers import clustered, image_ids, write_embeddings


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
