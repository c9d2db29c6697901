"""``fairserve cost check`` through the real CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from fairserve.sim.cost import CostModel, Efficiency, write_profile

MEASURED = Efficiency(mfu=0.5, mbu=0.7, kv_mbu=0.5, layer_overhead_s=4e-5, allreduce_latency_s=2e-5)


def fairserve(*args: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "fairserve", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300)


def write_steps(path: Path) -> None:
    """Steps at tp 2 and 4 timed by the MEASURED factors (a prefill and a decode per batch)."""
    rows = ["prefill_tokens,prefill_seqs,decode_seqs,kv_tokens,step_time_s,tp"]
    for tp in (2, 4):
        model = CostModel.from_names("A100-80GB", "Llama-3.1-70B", tp, MEASURED)
        for b in (1, 3, 16, 50):
            t = model.step_time_s(512 * b, 0, 512 * b, b * 512 * 513 // 2, b, b)
            rows.append(f"{512 * b},{b},0,0,{t:.12g},{tp}")
            t = model.step_time_s(0, b, 900 * b, 900 * b, b, 0)
            rows.append(f"0,0,{b},{900 * b},{t:.12g},{tp}")
    path.write_text("\n".join(rows) + "\n")


def test_check_with_the_profile_that_made_the_steps_has_no_error(tmp_path: Path) -> None:
    steps, profile = tmp_path / "steps.csv", tmp_path / "p.yaml"
    write_steps(steps)
    write_profile(profile, CostModel.from_names("A100-80GB", "Llama-3.1-70B", 2, MEASURED))
    args = ("cost", "check", str(steps), "--model", "Llama-3.1-70B", "--gpu", "A100-80GB")
    proc = fairserve(*args, "--tp", "2", "--profile", str(profile), "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["n"] == 16 and set(result["by_tp"]) == {"2", "4"}
    for scores in (result, *result["by_tp"].values()):
        assert scores["mape"] < 1e-6 and scores["mape_prefill"] < 1e-6
        assert scores["mape_decode"] < 1e-6
    # The shipped factors are not the ones that made the steps: a real error, per regime.
    shipped = json.loads(fairserve(*args, "--json").stdout)
    assert shipped["mape_prefill"] > 1 and shipped["mape_decode"] > 1
    table = fairserve(*args)
    assert table.returncode == 0 and "mape_decode" in table.stdout


def varied_steps(tps: tuple[int, ...]) -> str:
    """Steps timed by the MEASURED factors, varied enough to identify every term."""
    rows = ["prefill_tokens,prefill_seqs,decode_seqs,kv_tokens,step_time_s,tp"]
    for tp in tps:
        model = CostModel.from_names("A100-80GB", "Llama-3.1-70B", tp, MEASURED)
        for n, b in ((64, 1), (512, 1), (4096, 1), (512, 4), (256, 32)):
            t = model.step_time_s(n * b, 0, n * b, b * n * (n + 1) // 2, b, b)
            rows.append(f"{n * b},{b},0,0,{t:.12g},{tp}")
        for b, ctx in ((1, 300), (1, 6000), (8, 2000), (64, 500), (200, 3000)):
            t = model.step_time_s(0, b, ctx * b, ctx * b, b, 0)
            rows.append(f"0,0,{b},{ctx * b},{t:.12g},{tp}")
    return "\n".join(rows) + "\n"


def test_a_profile_fitted_on_some_tp_degrees_checks_another(tmp_path: Path) -> None:
    """Cross-validation by tp as a user runs it: calibrate on tp 2 and 4, check tp 8."""
    train, test, profile = tmp_path / "train.csv", tmp_path / "test.csv", tmp_path / "p.yaml"
    train.write_text(varied_steps((2, 4)))
    test.write_text(varied_steps((8,)))
    shape = ("--model", "Llama-3.1-70B", "--gpu", "A100-80GB")
    cal = fairserve("calibrate", str(train), *shape, "--out", str(profile))
    assert cal.returncode == 0, cal.stderr
    for tp_flag in ((), ("--tp", "8"), ("--tp", "2")):  # rows carry their tp; the flag is moot
        proc = fairserve("cost", "check", str(test), *shape, *tp_flag, "--profile", str(profile),
                         "--json")  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        result = json.loads(proc.stdout)
        assert list(result["by_tp"]) == ["8"] and result["mape"] < 5, result
    other = fairserve("cost", "check", str(test), "--model", "Llama-3.1-8B", "--gpu",
                      "A100-80GB", "--profile", str(profile))  # fmt: skip
    assert other.returncode != 0 and "Traceback" not in other.stderr
    assert "is for Llama-3.1-70B on A100-80GB" in other.stderr


def test_check_names_the_bad_line(tmp_path: Path) -> None:
    steps = tmp_path / "steps.csv"
    steps.write_text("prefill_tokens,decode_seqs,kv_tokens,step_time_s\n0,4,400,0.01\n0,4,x,1\n")
    proc = fairserve("cost", "check", str(steps))
    assert proc.returncode != 0
    assert "steps.csv:3: column 'kv_tokens'" in proc.stderr


def test_request_level_rows_are_read(tmp_path: Path) -> None:
    steps = tmp_path / "requests.csv"
    steps.write_text("prompt,batch,out,prefill_s,tbt_s,tp\n512,4,128,0.5,0.05,4\n")
    proc = fairserve("cost", "check", str(steps), "--model", "Llama-3.1-70B", "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["n"] == 2 and list(result["by_tp"]) == ["4"]
    assert result["by_tp"]["4"]["mape_prefill"] is not None


def test_a_model_from_its_config_json(tmp_path: Path) -> None:
    """--model-config: a Mixtral-style MoE that is in no catalogue, calibrated then checked."""
    from fairserve.sim.cost import gpu_spec
    from fairserve.sim.hf_config import model_from_config

    config = tmp_path / "config.json"
    config.write_text(
        json.dumps({
            "_name_or_path": "my-moe", "num_hidden_layers": 16, "hidden_size": 2048,
            "num_attention_heads": 16, "num_key_value_heads": 4, "intermediate_size": 5632,
            "vocab_size": 32000, "max_position_embeddings": 8192, "num_local_experts": 8,
            "num_experts_per_tok": 2,
        })
    )  # fmt: skip
    model = CostModel(gpu_spec("A100-80GB"), model_from_config(config), 2, MEASURED)
    steps = tmp_path / "steps.csv"
    rows = ["prefill_tokens,prefill_seqs,decode_seqs,kv_tokens,step_time_s"]
    for b in (1, 4, 16, 64):
        t = model.step_time_s(0, b, 700 * b, 700 * b, b, 0)
        rows.append(f"0,0,{b},{700 * b},{t:.12g}")
    steps.write_text("\n".join(rows) + "\n")
    profile = tmp_path / "p.yaml"
    write_profile(profile, model)
    common = ("--model-config", str(config), "--gpu", "A100-80GB", "--tp", "2")
    proc = fairserve("cost", "check", str(steps), *common, "--profile", str(profile), "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["mape"] < 1e-6
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    proc = fairserve("cost", "check", str(steps), "--model-config", str(bad))
    assert proc.returncode == 2 and "bad.json: key 'num_hidden_layers' is missing" in proc.stderr
