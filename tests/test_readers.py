from __future__ import annotations

import io
import threading

import pytest

from jobs.readers import InputFormatError, detect_format, prefetch, read_batches


def batches(data: bytes, fmt: str, chunk_rows: int = 3):
    return list(read_batches(io.BytesIO(data), fmt, chunk_rows))


def test_jsonl_line_numbers_survive_blank_lines_and_bad_lines():
    data = b'{"a": 1}\r\n\n{"a": 2}\n   \n{"a": \n[1, 2]\n{"a": 3}'
    got = batches(data, "jsonl", chunk_rows=4)
    rows = [(n, r["a"]) for b in got for n, r in zip(b.rows.to_pylist(), b.table.to_pylist())]
    assert rows == [(1, 1), (3, 2), (7, 3)]
    rejects = [(r.row, r.reason.split(":")[0]) for b in got for r in b.rejects]
    assert rejects == [(5, "invalid JSON"), (6, "not a JSON object but list")]


def test_jsonl_block_with_disagreeing_types_keeps_every_row():
    got = batches(b'{"c": 0.5, "x": 1}\n{"c": "high", "x": {"k": 1}}\n', "jsonl")
    assert got[0].table.column("c").to_pylist() == ["0.5", "high"]
    assert got[0].table.column("x").to_pylist() == ["1", '{"k": 1}']


def test_csv_rows_are_text_with_line_numbers_and_rejects():
    data = b"a,b\n1,x\n2\n3,y\n4,z\n5,w\n"
    got = batches(data, "csv", chunk_rows=2)
    rows = [(n, r["a"], r["b"]) for b in got for n, r in zip(b.rows.to_pylist(), b.table.to_pylist())]
    assert rows == [(2, "1", "x"), (4, "3", "y"), (5, "4", "z"), (6, "5", "w")]
    assert [(r.row, r.raw) for b in got for r in b.rejects] == [(3, "2")]


def test_format_detection():
    assert detect_format("s3://b/p.JSONL.gz") == "jsonl"
    assert detect_format("x.pq") == "parquet"
    assert detect_format("x.txt", "csv") == "csv"
    with pytest.raises(InputFormatError, match="allowed: auto, jsonl, csv, parquet"):
        detect_format("x.csv", "xls")


def test_prefetch_reads_in_a_background_thread_in_order_and_passes_errors():
    made = []

    def items():
        for i in range(5):
            made.append((i, threading.current_thread().name))
            yield i
        raise RuntimeError("source broke")

    seen = []
    with pytest.raises(RuntimeError, match="source broke"):
        for item in prefetch(items()):
            seen.append(item)
    assert seen == [0, 1, 2, 3, 4]
    assert all(name.startswith("prefetch") for _, name in made)
