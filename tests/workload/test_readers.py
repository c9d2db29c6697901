"""Readers on small samples the tests write: values, detection and every kind of bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from fairserve.workload import TraceError, detect_format, load, load_trace

from .conftest import AZURE_HEADER, BURSTGPT_HEADER, write

# ---------------------------------------------------------------- generic


def test_generic_csv_with_optional_columns(tmp_path: Path) -> None:
    path = write(
        tmp_path / "t.csv",
        "arrival_s,prompt_tokens,output_tokens,tenant,turn,conversation_id,prefix_hashes,extra\n"
        "2.5,10,3,b,1,c1,1 2,x\n"
        "0.5,20,4,a,0,c1,1,y\n",
    )
    wl = load_trace(path)
    assert wl.meta["format"] == "generic-csv"
    assert wl.arrival_s.tolist() == [0.5, 2.5]
    assert wl.prompt_tokens.tolist() == [20, 10]
    assert wl.tenant.tolist() == ["a", "b"]
    assert wl.turn is not None and wl.turn.tolist() == [0, 1]
    assert wl.prefix_hashes is not None and wl.prefix_hashes.tolist() == [(1,), (1, 2)]
    assert wl.meta["ignored_columns"] == ["extra"]


def test_generic_jsonl_and_parquet_agree(tmp_path: Path) -> None:
    rows = [
        {"arrival_s": 0.0, "prompt_tokens": 5, "output_tokens": 7, "tenant": "x"},
        {"arrival_s": 1.0, "prompt_tokens": 6, "output_tokens": 8, "tenant": "y"},
    ]
    jsonl = write(tmp_path / "t.jsonl", "\n".join(json.dumps(r) for r in rows) + "\n")
    parquet = tmp_path / "t.parquet"
    pl.DataFrame(rows).write_parquet(parquet)
    a, b = load_trace(jsonl), load_trace(parquet)
    for wl in (a, b):
        assert wl.prompt_tokens.tolist() == [5, 6]
        assert wl.output_tokens.tolist() == [7, 8]
        assert wl.tenant.tolist() == ["x", "y"]


def test_generic_failed_column_allows_zero_output(tmp_path: Path) -> None:
    path = write(
        tmp_path / "t.csv",
        "arrival_s,prompt_tokens,output_tokens,failed\n0,5,0,true\n1,5,3,false\n",
    )
    wl = load_trace(path)
    assert wl.failed is not None and wl.failed.tolist() == [True, False]
    bad = write(tmp_path / "u.csv", "arrival_s,prompt_tokens,output_tokens,failed\n0,5,0,false\n")
    with pytest.raises(TraceError, match="unless the row is flagged failed"):
        load_trace(bad)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            "0,10,3\n1,abc,3\n",
            "t.csv:3: column 'prompt_tokens': expected an integer >= 1, got 'abc'",
        ),
        ("0,10,3\n1,0,3\n", "t.csv:3: column 'prompt_tokens': expected an integer >= 1, got '0'"),
        (
            "0,10,3\n1,10,-2\n",
            "t.csv:3: column 'output_tokens': expected an integer >= 1, got '-2'",
        ),
        (
            "0,10,3\n1,12.5,3\n",
            "t.csv:3: column 'prompt_tokens': expected an integer >= 1, got '12.5'",
        ),
        (
            "0,10,3\nsoon,10,3\n",
            "t.csv:3: column 'arrival_s': expected a finite number >= 0, got 'soon'",
        ),
        (
            "0,10,3\n-1,10,3\n",
            "t.csv:3: column 'arrival_s': expected a finite number >= 0, got '-1'",
        ),
        ("0,10,3\n1,10\n", "t.csv:3: expected 3 fields, got 2"),
        (
            "0,10,3\n1,,3\n",
            "t.csv:3: column 'prompt_tokens': expected an integer >= 1, got an empty value",
        ),
    ],
)
def test_bad_csv_rows_name_file_line_column_and_type(
    tmp_path: Path, body: str, message: str
) -> None:
    path = write(tmp_path / "t.csv", "arrival_s,prompt_tokens,output_tokens\n" + body)
    with pytest.raises(TraceError) as info:
        load_trace(path)
    assert str(info.value).endswith(message)
    assert str(path) in str(info.value)


def test_skip_bad_rows_counts_what_it_skipped(tmp_path: Path) -> None:
    path = write(
        tmp_path / "t.csv",
        "arrival_s,prompt_tokens,output_tokens\n0,10,3\n1,abc,3\n2,5\n3,0,1\n4,7,7\n",
    )
    wl = load_trace(path, skip_bad_rows=True)
    assert wl.skipped_rows == 3
    assert wl.prompt_tokens.tolist() == [10, 7]


def test_skip_bad_rows_on_range_errors_only_uses_the_fast_path(tmp_path: Path) -> None:
    path = write(tmp_path / "t.csv", "arrival_s,prompt_tokens,output_tokens\n0,10,3\n1,0,3\n")
    wl = load_trace(path, skip_bad_rows=True)
    assert (len(wl), wl.skipped_rows) == (1, 1)


def test_blank_lines_are_ignored(tmp_path: Path) -> None:
    path = write(tmp_path / "t.csv", "arrival_s,prompt_tokens,output_tokens\n0,10,3\n\n1,4,3\n\n")
    assert load_trace(path).prompt_tokens.tolist() == [10, 4]


def test_bad_jsonl_line_is_named(tmp_path: Path) -> None:
    path = write(
        tmp_path / "t.jsonl",
        '{"arrival_s": 0, "prompt_tokens": 3, "output_tokens": 1}\n'
        '{"arrival_s": 1, "prompt_tokens": 3, "output_tokens": 1\n',
    )
    with pytest.raises(TraceError, match=r"t\.jsonl:2: invalid JSON"):
        load_trace(path)
    path2 = write(
        tmp_path / "u.jsonl",
        '{"arrival_s": 0, "prompt_tokens": 3, "output_tokens": 1}\n'
        '{"arrival_s": 1, "prompt_tokens": "many", "output_tokens": 1}\n',
    )
    with pytest.raises(
        TraceError,
        match=r"u\.jsonl:2: column 'prompt_tokens': expected an integer >= 1, got 'many'",
    ):
        load_trace(path2)


def test_bad_parquet_row_is_named(tmp_path: Path) -> None:
    path = tmp_path / "t.parquet"
    pl.DataFrame(
        {"arrival_s": [0.0, 1.0], "prompt_tokens": [4, 0], "output_tokens": [1, 1]}
    ).write_parquet(path)
    with pytest.raises(
        TraceError,
        match=r"t\.parquet: row 2: column 'prompt_tokens': expected an integer >= 1, got 0",
    ):
        load_trace(path)
    assert load_trace(path, skip_bad_rows=True).skipped_rows == 1


def test_missing_column_names_the_column_and_file(tmp_path: Path) -> None:
    path = write(tmp_path / "t.csv", "arrival_s,prompt_tokens\n0,1\n")
    with pytest.raises(TraceError) as info:
        load_trace(path, fmt="csv")
    assert "missing required column 'output_tokens'" in str(info.value)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("text", ["", "arrival_s,prompt_tokens,output_tokens\n"])
def test_empty_file_is_a_clear_error(tmp_path: Path, text: str) -> None:
    path = write(tmp_path / "t.csv", text)
    with pytest.raises(TraceError, match=r"empty|no data rows"):
        load_trace(path, fmt="csv")


def test_unknown_format_is_a_clear_error(tmp_path: Path) -> None:
    path = write(tmp_path / "t.csv", "a,b\n1,2\n")
    with pytest.raises(TraceError, match=r"unknown trace format.*known formats: burstgpt"):
        load_trace(path)
    with pytest.raises(TraceError, match="unknown trace format"):
        load_trace(write(tmp_path / "t.txt", "hello\n"))
    with pytest.raises(TraceError, match="unknown trace format 'nope'"):
        load_trace(path, fmt="nope")


def test_all_rows_bad_with_skip_is_still_an_error(tmp_path: Path) -> None:
    path = write(tmp_path / "t.csv", "arrival_s,prompt_tokens,output_tokens\nx,1,1\n")
    with pytest.raises(TraceError, match="all 1 rows were malformed"):
        load_trace(path, skip_bad_rows=True)


# ---------------------------------------------------------------- BurstGPT

BURST_ROWS = (
    "0,ChatGPT,100,20,120,Conversation log\n"
    "1.5,GPT-4,50,0,50,API log\n"
    "3,ChatGPT,7,9,16,API log\n"
    "2,GPT-4,30,40,70,Conversation log\n"
)


def test_burstgpt_values_failures_and_models(tmp_path: Path) -> None:
    path = write(tmp_path / "burst.csv", BURSTGPT_HEADER + BURST_ROWS)
    assert detect_format(path) == "burstgpt"
    wl = load_trace(path)
    assert wl.arrival_s.tolist() == [0.0, 1.5, 2.0, 3.0]
    assert wl.prompt_tokens.tolist() == [100, 50, 30, 7]
    assert wl.output_tokens.tolist() == [20, 0, 40, 9]
    assert wl.failed is not None and wl.failed.tolist() == [False, True, False, False]
    assert wl.model is not None and wl.model.tolist() == ["ChatGPT", "GPT-4", "GPT-4", "ChatGPT"]
    reqs = list(wl.requests())  # the failure is kept, to be simulated as one
    assert [(r.prompt_tokens, r.fails) for r in reqs] == [
        (100, False),
        (50, True),
        (30, False),
        (7, False),
    ]
    assert len(load_trace(path, drop_failed=True)) == 3


@pytest.mark.parametrize(
    ("tenant_by", "expected"),
    [
        ("model", ["ChatGPT", "GPT-4", "GPT-4", "ChatGPT"]),
        ("log_type", ["conversation", "api", "conversation", "api"]),
        (
            "model_log_type",
            ["ChatGPT/conversation", "GPT-4/api", "GPT-4/conversation", "ChatGPT/api"],
        ),
    ],
)
def test_burstgpt_tenants_by_column(tmp_path: Path, tenant_by: str, expected: list[str]) -> None:
    path = write(tmp_path / "burst.csv", BURSTGPT_HEADER + BURST_ROWS)
    assert load_trace(path, tenant_by=tenant_by).tenant.tolist() == expected


def test_burstgpt_rejects_zero_prompt_and_negative_response(tmp_path: Path) -> None:
    path = write(tmp_path / "b.csv", BURSTGPT_HEADER + "0,ChatGPT,0,5,5,API log\n")
    with pytest.raises(
        TraceError, match=r"b\.csv:2: column 'Request tokens': expected an integer >= 1"
    ):
        load_trace(path)
    path = write(tmp_path / "c.csv", BURSTGPT_HEADER + "0,ChatGPT,4,-1,5,API log\n")
    with pytest.raises(
        TraceError, match=r"c\.csv:2: column 'Response tokens': expected an integer >= 0"
    ):
        load_trace(path)


def test_reader_options_are_checked(tmp_path: Path) -> None:
    path = write(tmp_path / "burst.csv", BURSTGPT_HEADER + BURST_ROWS)
    with pytest.raises(TraceError, match="does not take the option"):
        load_trace(path, speedup=2)


# ---------------------------------------------------------------- Azure


def test_azure_timestamps_become_seconds_from_the_first(tmp_path: Path) -> None:
    path = write(
        tmp_path / "az.csv",
        AZURE_HEADER
        + "2023-11-16 18:15:46.6805900,374,44\n"
        + "2023-11-16 18:15:50.9951690,396,109\n"
        + "2023-11-16 18:16:46.6805900,10,1\n",
    )
    assert detect_format(path) == "azure"
    wl = load_trace(path)
    assert wl.arrival_s == pytest.approx([0.0, 4.314579, 60.0], abs=1e-6)
    assert wl.prompt_tokens.tolist() == [374, 396, 10]


def test_azure_2024_zone_suffix_and_bad_timestamp(tmp_path: Path) -> None:
    path = write(
        tmp_path / "az.csv",
        AZURE_HEADER + "2024-05-10 00:00:00.009930+00:00,5,6\n2024-05-10 00:00:02.5+00:00,7,8\n",
    )
    assert load_trace(path).arrival_s == pytest.approx([0.0, 2.49007])
    bad = write(tmp_path / "bad.csv", AZURE_HEADER + "2024-05-10 00:00:00,5,6\nyesterday,7,8\n")
    with pytest.raises(TraceError, match=r"bad\.csv:3: column 'TIMESTAMP': expected a date-time"):
        load_trace(bad)


def test_azure_rows_that_generated_nothing_are_failed_requests(tmp_path: Path) -> None:
    rows = "2024-05-10 00:00:00,100,0\n2024-05-10 00:00:01,100,5\n2024-05-10 00:00:02,80,0\n"
    path = write(tmp_path / "az.csv", AZURE_HEADER + rows)
    wl = load_trace(path)
    assert wl.failed.tolist() == [True, False, True] and wl.meta["failed_rows"] == 2
    assert len(load_trace(path, drop_failed=True)) == 1
    # A prompt of no tokens is still malformed.
    bad = write(tmp_path / "bad.csv", AZURE_HEADER + "2024-05-10 00:00:00,0,5\n")
    with pytest.raises(TraceError, match=r"bad\.csv:2: column 'ContextTokens'"):
        load_trace(bad)


def test_azure_iso_8601_forms_and_zones(tmp_path: Path) -> None:
    rows = [
        "2024-05-10T00:00:00Z",  # T separator, Zulu
        "2024-05-10T00:00:01.5z",
        "2024-05-10 02:00:02.25+02:00",  # another zone: 00:00:02.25 UTC
        "2024-05-10 00:00:03+0000",  # offset without a colon
        "2024-05-10 00:00:04",  # whole seconds, no zone
    ]
    path = write(tmp_path / "az.csv", AZURE_HEADER + "".join(f"{r},5,6\n" for r in rows))
    assert load_trace(path).arrival_s == pytest.approx([0.0, 1.5, 2.25, 3.0, 4.0])


def test_a_byte_order_mark_before_the_header_is_not_part_of_it(tmp_path: Path) -> None:
    body = AZURE_HEADER + "2023-11-16 18:15:46.68,374,44\r\n2023-11-16 18:15:47.68,10,1\r\n"
    path = tmp_path / "az.csv"
    path.write_bytes(b"\xef\xbb\xbf" + body.encode())  # as spreadsheet exports write
    assert detect_format(path) == "azure"
    assert load_trace(path).prompt_tokens.tolist() == [374, 10]
    # A bad row is still named by its line (the slow path reads the mark too).
    path.write_bytes(b"\xef\xbb\xbf" + (body + "2023-11-16 18:15:48,x,1\r\n").encode())
    with pytest.raises(TraceError, match=r"az\.csv:4: column 'ContextTokens'"):
        load_trace(path)
    row = {"timestamp": 0, "input_length": 600, "output_length": 5, "hash_ids": [1, 2]}
    jsonl = tmp_path / "m.jsonl"
    jsonl.write_bytes(b"\xef\xbb\xbf" + (json.dumps(row) + "\n").encode() * 2)
    assert detect_format(jsonl) == "mooncake"
    assert load_trace(jsonl).prompt_tokens.tolist() == [600, 600]


# ---------------------------------------------------------------- Mooncake


def test_mooncake_hashes_and_milliseconds(tmp_path: Path) -> None:
    rows = [
        {"timestamp": 0, "input_length": 1000, "output_length": 5, "hash_ids": [1, 2]},
        {"timestamp": 1500, "input_length": 600, "output_length": 7, "hash_ids": [1, 3]},
    ]
    path = write(tmp_path / "m.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    assert detect_format(path) == "mooncake"
    wl = load(path)
    assert wl.arrival_s.tolist() == [0.0, 1.5]
    assert wl.prefix_block_tokens == 512
    reqs = list(wl.requests())
    assert reqs[1].prefix_hashes == (1, 3) and reqs[1].prefix_block_tokens == 512


def test_mooncake_rejects_more_blocks_than_the_prompt_fills(tmp_path: Path) -> None:
    row = {"timestamp": 0, "input_length": 100, "output_length": 5, "hash_ids": [1, 2]}
    path = write(tmp_path / "m.jsonl", json.dumps(row) + "\n")
    with pytest.raises(TraceError, match="2 blocks of 512 tokens exceed input_length 100"):
        load_trace(path)


def test_mooncake_bad_hash_list(tmp_path: Path) -> None:
    rows = [
        '{"timestamp": 0, "input_length": 10, "output_length": 5, "hash_ids": [1]}',
        '{"timestamp": 1, "input_length": 10, "output_length": 5, "hash_ids": ["a"]}',
    ]
    path = write(tmp_path / "m.jsonl", "\n".join(rows) + "\n")
    with pytest.raises(
        TraceError, match=r"m\.jsonl:2: column 'hash_ids': expected a list of integers"
    ):
        load_trace(path)


def test_request_stream_of_a_read_trace_matches_its_columns(tmp_path: Path) -> None:
    path = write(tmp_path / "burst.csv", BURSTGPT_HEADER + BURST_ROWS)
    wl = load_trace(path).drop_failed()
    reqs = list(wl.requests())
    assert np.array_equal([r.arrival_s for r in reqs], wl.arrival_s)
    assert np.array_equal([r.output_tokens for r in reqs], wl.output_tokens)
