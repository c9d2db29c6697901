"""Per-class priors and every predictor option reach the predictor from a spec string."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from fairserve.cli.app import app
from fairserve.core.predict import PREDICTORS
from fairserve.core.predict.driftsched import DriftSchedPredictor
from fairserve.core.registry import ComponentError, parse_list


@pytest.mark.parametrize(
    "text",
    [
        "driftsched:priors_tokens={chat: 200, code: 500},alpha=0.2",
        "driftsched:priors_tokens={chat:200,code:500},alpha=0.2",  # no spaces, as typed
        "driftsched:priors_tokens={chat:200,code:500};alpha=0.2",
    ],
)
def test_priors_keep_their_commas_and_colons(text: str) -> None:
    [spec] = parse_list(text)
    predictor = PREDICTORS.build(spec)
    assert isinstance(predictor, DriftSchedPredictor)
    assert predictor.priors_tokens == {"chat": 200, "code": 500}
    assert predictor.alpha == 0.2


def test_a_list_of_predictors_with_priors() -> None:
    specs = parse_list("driftsched:priors_tokens={chat:200,code:500},default_tokens=64,history")
    assert [s.name for s in specs] == ["driftsched", "history"]
    assert dict(specs[0].params) == {"priors_tokens": {"chat": 200, "code": 500},
                                     "default_tokens": 64}  # fmt: skip


def test_values_with_colons_are_left_alone() -> None:
    [spec] = parse_list("x:u={url: http://host:80}")
    assert dict(spec.params) == {"u": {"url": "http://host:80"}}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("driftsched:priors_tokens=chat", "priors_tokens must map classes to tokens"),
        ("driftsched:priors_tokens={chat: fast}", "prior of class 'chat' must be a number"),
        ("driftsched:priors_tokens={chat: 0}", "prior of class 'chat' must be a number"),
    ],
)
def test_bad_priors_name_the_key(text: str, message: str) -> None:
    with pytest.raises(ComponentError, match=message):
        PREDICTORS.build(parse_list(text)[0])


def test_compare_takes_per_class_priors() -> None:
    args = ["compare", "--requests", "60", "--policies", "sjf", "--json",
            "--predictor", "driftsched:priors_tokens={chat:50,code:400,batch:900},alpha=0.5,history"]  # fmt: skip
    out = CliRunner().invoke(app, args)
    assert out.exit_code == 0, out.output
    rows = json.loads(out.stdout)
    assert [r["predictor"].split(":")[0] for r in rows] == ["driftsched", "history"]
    assert "chat: 50" in rows[0]["predictor"] and "alpha=0.5" in rows[0]["predictor"]
