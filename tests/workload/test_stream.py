"""The bounded-memory streaming reader: same requests as load_trace, chunk by chunk."""

from __future__ import annotations

from pathlib import Path

import pytest

from fairserve.workload import TraceError, load_trace
from fairserve.workload.readers.stream import stream_trace

from .conftest import AZURE_HEADER, BURSTGPT_HEADER, write


def _burst(n: int, bad_line: int | None = None) -> str:
    rows = []
    for i in range(n):
        prompt = "oops" if bad_line is not None and i + 2 == bad_line else str(10 + i)
        rows.append(f"{i * 0.5},{'GPT-4' if i % 3 else 'ChatGPT'},{prompt},{i % 5},1,API log\n")
    return BURSTGPT_HEADER + "".join(rows)


def test_stream_equals_load_across_many_chunks(tmp_path: Path) -> None:
    path = write(tmp_path / "b.csv", _burst(500))
    expected = list(load_trace(path, tenant_by="model").requests())
    stream = stream_trace(path, tenant_by="model", batch_bytes=256)  # ~8 rows per chunk
    got = list(stream)
    assert [(r.id, r.arrival_s, r.prompt_tokens, r.output_tokens, r.tenant) for r in got] == [
        (r.id, r.arrival_s, r.prompt_tokens, r.output_tokens, r.tenant) for r in expected
    ]
    assert stream.failed_rows == 100  # i % 5 == 0 -> 0 response tokens


def test_stream_names_the_bad_line_in_a_later_chunk(tmp_path: Path) -> None:
    path = write(tmp_path / "b.csv", _burst(300, bad_line=258))
    with pytest.raises(
        TraceError, match=r"b\.csv:258: column 'Request tokens': expected an integer"
    ):
        list(stream_trace(path, batch_bytes=300))
    stream = stream_trace(path, batch_bytes=300, skip_bad_rows=True)
    got = list(stream)
    assert len(got) == 300 - 1 and sum(r.fails for r in got) == 60  # failures kept, flagged
    assert stream.skipped_rows == 1


def test_stream_needs_sorted_rows(tmp_path: Path) -> None:
    text = _burst(100)
    lines = text.splitlines(keepends=True)
    path = write(tmp_path / "b.csv", lines[0] + "".join(lines[51:]) + "".join(lines[1:51]))
    with pytest.raises(TraceError, match="streaming needs rows sorted by time"):
        list(stream_trace(path, batch_bytes=200))


def test_stream_azure_times_are_relative_to_the_first_row(tmp_path: Path) -> None:
    rows = "".join(f"2023-11-16 18:15:{10 + i:02d}.5000000,{5 + i},{1 + i}\n" for i in range(40))
    path = write(tmp_path / "az.csv", AZURE_HEADER + rows)
    got = list(stream_trace(path, batch_bytes=100))
    assert [r.arrival_s for r in got] == pytest.approx([float(i) for i in range(40)])


def test_stream_reads_past_a_byte_order_mark(tmp_path: Path) -> None:
    path = tmp_path / "az.csv"
    rows = "".join(f"2023-11-16 18:15:{i:02d}.5,{10 + i},3\n" for i in range(40))
    path.write_bytes(b"\xef\xbb\xbf" + (AZURE_HEADER + rows).encode())
    streamed = list(stream_trace(path, batch_bytes=256))
    assert [r.prompt_tokens for r in streamed] == list(range(10, 50))
