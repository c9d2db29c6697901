"""The sweep spec: validation with errors that name the key, and the planned cells."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from fairserve.experiments.sweep import (
    SweepSpecError,
    load_sweep_spec,
    parse_sweep_spec,
    plan_cells,
    run_sweep,
)

EXAMPLE = Path(__file__).parents[2] / "examples" / "sweeps" / "capacity_knee.yaml"


def test_example_spec_is_valid() -> None:
    spec = load_sweep_spec(EXAMPLE)
    assert spec.size() == 4 * 1 * 1 * 5 * 3
    assert spec.load.unit == "capacity"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"workloads": []}, "workloads: List should have at least 1 item"),
        ({"workloads": [{"spec": "a.yaml", "trace": "b.csv"}]}, "workloads.0: Value error, a workload needs exactly one of"),
        ({"workloads": [{"synthetic": {"requests": 1}}]}, "workloads.0.synthetic.requests"),
        ({"workloads": [{"synthetic": {}}], "polices": ["fifo"]}, "polices: Extra inputs are not permitted"),
        ({"workloads": [{"synthetic": {}}], "loads": [0.5, -1]}, "'loads' must be finite numbers > 0"),
        ({"workloads": [{"synthetic": {}}], "policies": ["fifo", "fifo"]}, "'policies' has repeated entries"),
        ({"workloads": [{"synthetic": {}}], "policies": ["vtc:weight"]}, "policies.0: Value error, 'vtc:weight'"),
        ({"workloads": [{"synthetic": {}}], "load": {"unit": "rate", "capacity_tokens_per_s": 5}}, "load: Value error"),
        ({"workloads": [{"synthetic": {}}], "deployment": {"tp": 0}}, "deployment.tp"),
    ],
)  # fmt: skip
def test_errors_name_the_key(data: dict[str, object], message: str) -> None:
    with pytest.raises(SweepSpecError) as info:
        parse_sweep_spec(data, "s.yaml")
    assert f"s.yaml: {message}" in str(info.value) or message in str(info.value)


def test_unknown_component_and_missing_file_fail_before_running(tmp_path: Path) -> None:
    spec = parse_sweep_spec({"workloads": [{"synthetic": {}}], "policies": ["fifo", "nope"]})
    with pytest.raises(SweepSpecError, match=r"policies\.1: unknown policy 'nope'"):
        run_sweep(spec, tmp_path, use_ray=False)
    spec = parse_sweep_spec({"workloads": [{"trace": "missing.csv"}]})
    with pytest.raises(SweepSpecError, match="no such file"):
        run_sweep(spec, tmp_path, use_ray=False)
    assert not list((tmp_path / "cells").glob("*.json"))


def test_component_strings_carry_parameters() -> None:
    spec = parse_sweep_spec(
        {"workloads": [{"synthetic": {}}], "policies": ["vtc:output_weight=4;input-weight=1", {"name": "fifo", "label": "plain"}]}
    )  # fmt: skip
    vtc, fifo = spec.policies
    assert vtc.name == "vtc" and vtc.params == {"output_weight": 4, "input_weight": 1}
    assert vtc.display == "vtc:output_weight=4;input-weight=1"
    assert fifo.display == "plain"


def test_cells_are_the_grid_with_stable_ids(tmp_path: Path) -> None:
    data = {
        "workloads": [{"spec": "w.yaml", "max_requests": 50}, {"synthetic": {"requests": 50}}],
        "policies": ["fifo", "vtc"],
        "predictors": [None, "oracle"],
        "loads": [0.5, 1.0],
        "seeds": [0, 1, 2],
    }
    (tmp_path / "a").mkdir()
    shutil.copy(
        Path(__file__).parents[2] / "examples" / "workloads" / "multi_tenant.yaml",
        tmp_path / "a" / "w.yaml",
    )
    spec = parse_sweep_spec(data)
    cells = plan_cells(spec, tmp_path / "a")
    assert len(cells) == spec.size() == 2 * 2 * 2 * 2 * 3
    assert len({c.id for c in cells}) == len(cells)
    assert [c.id for c in plan_cells(spec, tmp_path / "a")] == [c.id for c in cells]
    # The same workload file elsewhere: the same cells (the path is not part of the id) ...
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    assert [c.id for c in plan_cells(spec, tmp_path / "b")] == [c.id for c in cells]
    # ... but changed contents: new cells for that workload.
    text = (tmp_path / "b" / "w.yaml").read_text().replace("seed: 7", "seed: 8")
    (tmp_path / "b" / "w.yaml").write_text(text)
    changed = {c.id for c in plan_cells(spec, tmp_path / "b")}
    assert len(changed & {c.id for c in cells}) == len(cells) // 2
    assert cells[0].labels == {
        "workload": "w", "policy": "fifo", "predictor": None, "router": "round-robin",
        "load": 0.5, "seed": 0,
    }  # fmt: skip


def test_spec_file_errors(tmp_path: Path) -> None:
    with pytest.raises(SweepSpecError, match="no such sweep spec"):
        load_sweep_spec(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"workloads": [{"synthetic": {"rate_per_s": 0}}]}))
    with pytest.raises(SweepSpecError, match=r"bad.yaml: workloads.0.synthetic.rate_per_s"):
        load_sweep_spec(bad)


def test_yaml_errors_name_file_and_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("workloads:\n  - synthetic: {requests: 10\npolicies: [fifo]\n")
    with pytest.raises(SweepSpecError, match=r"bad\.yaml:3:\d+: not valid YAML"):
        load_sweep_spec(bad)
    empty = tmp_path / "empty.yaml"
    empty.write_text("# nothing\n")
    with pytest.raises(SweepSpecError, match="the sweep spec is empty"):
        load_sweep_spec(empty)


def test_component_lists_as_one_string_and_parameter_checks(tmp_path: Path) -> None:
    spec = parse_sweep_spec(
        {"workloads": [{"synthetic": {}}], "policies": "fifo,sjf:prompt_weight=1,default_output_tokens=64,vtc"}
    )  # fmt: skip
    assert [p.display for p in spec.policies] == [
        "fifo", "sjf:prompt_weight=1,default_output_tokens=64", "vtc",
    ]  # fmt: skip
    assert spec.policies[1].spec.params == {"prompt_weight": 1, "default_output_tokens": 64}
    bogus = parse_sweep_spec({"workloads": [{"synthetic": {}}], "routers": ["p2c:bogus=1"]})
    with pytest.raises(
        SweepSpecError, match=r"routers\.0: router 'p2c': unknown parameter 'bogus'"
    ):
        run_sweep(bogus, tmp_path, use_ray=False)


def test_new_deployment_keys_reach_the_cell_and_keep_old_ids(tmp_path: Path) -> None:
    from fairserve.experiments.sweep.run import _sim_config

    base = {"workloads": [{"synthetic": {"requests": 20}}], "policies": ["fifo"]}
    plain = plan_cells(parse_sweep_spec(base), tmp_path)
    explicit = {"deployment": {"reference": False, "admission": None, "profile": None}}
    assert [c.id for c in plan_cells(parse_sweep_spec({**base, **explicit}), tmp_path)] == [
        c.id for c in plain
    ]
    (tmp_path / "latency.json").write_text("{}")
    guarded = {"deployment": {"reference": True, "admission": "slo:model=latency.json,slack=0.5"}}
    cell = plan_cells(parse_sweep_spec({**base, **guarded}), tmp_path)[0]
    assert cell.id != plain[0].id
    from fairserve.experiments.sweep.run import _cell_workload

    config = _sim_config(
        cell.definition, _cell_workload(cell.definition), cell.definition["policy"]
    )
    assert config.reference
    assert str(config.admission) == f"slo:model={tmp_path / 'latency.json'},slack=0.5"


def test_kv_tiers_expert_parallelism_and_quantum_reach_the_cell(tmp_path: Path) -> None:
    from fairserve.experiments.sweep.run import _cell_workload, _sim_config

    base = {"workloads": [{"synthetic": {"requests": 20}}], "policies": ["fifo"]}
    plain = plan_cells(parse_sweep_spec(base), tmp_path)[0]
    keys = {"cpu_kv_cache_gb": 100.0, "service_quantum_tokens": 128, "expert_parallel": True,
            "model": "Mixtral-8x7B", "tp": 2}  # fmt: skip
    cell = plan_cells(parse_sweep_spec({**base, "deployment": keys}), tmp_path)[0]
    assert cell.id != plain.id and "cpu_kv_cache_gb" not in plain.definition["deployment"]
    config = _sim_config(
        cell.definition, _cell_workload(cell.definition), cell.definition["policy"]
    )
    (instance,) = config.instances
    assert instance.expert_parallel and instance.engine.cpu_kv_cache_gb == 100.0
    assert instance.engine.service_quantum_tokens == 128
    bad = parse_sweep_spec({**base, "deployment": {"remote_kv_cache_gb": 10.0}})
    with pytest.raises(SweepSpecError, match="remote_kv_cache_gb needs cpu_kv_cache_gb"):
        run_sweep(bad, tmp_path / "bad", use_ray=False)
