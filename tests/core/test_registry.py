"""Component specs: one syntax on the command line and in YAML, one builder with clear errors."""

from __future__ import annotations

import pytest

from fairserve.core.policies import POLICIES
from fairserve.core.predict import PREDICTORS
from fairserve.core.registry import ComponentError, ComponentSpec, Registry, parse_list
from fairserve.core.route import ROUTERS


def test_a_list_splits_on_commas_and_parameters_continue_their_component() -> None:
    specs = parse_list("fifo,sjf:prompt_weight=1,aging_s=30,vtc")
    assert [s.name for s in specs] == ["fifo", "sjf", "vtc"]
    assert dict(specs[1].params) == {"prompt_weight": 1, "aging_s": 30}
    assert not specs[0].params and not specs[2].params


def test_values_are_yaml_and_brackets_keep_their_commas() -> None:
    (spec,) = parse_list("driftsched:priors_tokens={chat: 200, code: 50},alpha=0.5,flag=true")
    assert dict(spec.params) == {
        "priors_tokens": {"chat": 200, "code": 50},
        "alpha": 0.5,
        "flag": True,
    }


def test_semicolons_dashes_and_dotted_paths() -> None:
    assert dict(ComponentSpec.parse("vtc:input-weight=2;output_weight=3").params) == {
        "input_weight": 2,
        "output_weight": 3,
    }
    spec = ComponentSpec.parse("pkg.mod:Cls:a=1,b=2")
    assert spec.name == "pkg.mod:Cls" and dict(spec.params) == {"a": 1, "b": 2}


def test_the_string_and_the_mapping_forms_are_the_same_spec() -> None:
    text = ComponentSpec.of("prefix-affinity:imbalance=2")
    mapping = ComponentSpec.of({"name": "prefix-affinity", "params": {"imbalance": 2}})
    assert text == mapping
    assert ComponentSpec.of(str(text)) == text
    assert ComponentSpec.of(text.to_dict()) == text


@pytest.mark.parametrize("bad", ["", "a=1", "fifo:foo", ":a=1", "x:a=[1", "a,b"])
def test_malformed_specs_raise_component_error(bad: str) -> None:
    with pytest.raises(ComponentError):
        ComponentSpec.parse(bad)


def test_unknown_parameter_names_the_allowed_ones() -> None:
    with pytest.raises(ComponentError) as info:
        POLICIES.build("vtc:bogus=1")
    message = str(info.value)
    assert "'vtc'" in message and "'bogus'" in message
    assert "input_weight" in message and "\n" not in message


def test_unknown_name_lists_the_known_ones() -> None:
    with pytest.raises(ComponentError, match=r"known: .*fifo.*vtc"):
        POLICIES.build("nope")


def test_a_bad_value_names_the_component() -> None:
    with pytest.raises(ComponentError, match=r"prefix-affinity:imbalance=0\.5"):
        ROUTERS.build("prefix-affinity:imbalance=0.5")


def test_context_goes_only_where_the_factory_accepts_it() -> None:
    router = ROUTERS.build("round-robin", seed=3, tenants={}, load=None)
    assert router is not None
    # p2c takes the driver's seed, and a user's seed wins over it.
    a = ROUTERS.build("p2c", seed=3)
    b = ROUTERS.build("p2c:seed=3", seed=0)
    c = ROUTERS.build("p2c", seed=4)
    draws = [r._rng.random() for r in (a, b, c)]  # type: ignore[attr-defined]
    assert draws[0] == draws[1] != draws[2]


def test_a_required_parameter_left_out_is_named() -> None:
    reg: Registry[object] = Registry("widget")
    reg.register("needs-path")(lambda path, size=1: (path, size))
    with pytest.raises(ComponentError, match=r"widget 'needs-path': missing parameter 'path'"):
        reg.build("needs-path:size=2")
    assert reg.build("needs-path", path="ctx") == ("ctx", 1)  # the driver's context counts


def test_driver_only_context_is_not_a_user_parameter() -> None:
    assert "tenants" not in (POLICIES.parameters("vtc") or [])
    assert "seed" in (PREDICTORS.parameters("noisy-oracle") or [])
    with pytest.raises(ComponentError, match="unknown parameter 'tenants'"):
        POLICIES.check("vtc:tenants=1")
