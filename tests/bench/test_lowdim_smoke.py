"""bench/lowdim.py --smoke runs end to end, every arm through the engine's Runner, and writes a
protocol record (shape only: smoke figures are not claims)."""

from smoke import run_smoke


def test_lowdim_bench_smoke(tmp_path):
    record = run_smoke("lowdim", tmp_path, timeout=280)
    protocol = record["protocol"]
    problems = {"mf_d20", "mc_d30", "digits_head"}
    assert {p["name"] for p in protocol["problems"]} == problems
    assert [p["name"] for p in protocol["problems"] if p["standard"]] == ["digits_head"]
    arms = protocol["arms"]
    assert set(arms) == set(protocol["tuning"])  # every arm tuned
    assert arms["mf_d20/original"] == arms["mf_d20/compressed"]
    assert arms["digits_head/dense"]["stopping"]["metric"].startswith("validation accuracy")
    for name, arm in arms.items():  # every arm is the product: timed from the Runner's set-up
        assert arm["timed"]["includes"][0].startswith("Runner.setup"), name
    seeds = protocol["eval_seeds"]
    assert seeds and not set(seeds) & set(protocol["tuning_seeds"])
    tuning = protocol["tuning"]
    assert set(tuning) == {
        f"{p}/{arm}" for p in problems - {"digits_head"} for arm in ("original", "compressed")
    } | {f"digits_head/{arm}" for arm in ("original", "compressed", "dense")}
    for rec in tuning.values():
        assert len(rec["grid"]) == len(rec["scores"]) >= 3 and rec["budget"] == 3
        assert rec["winner"] in rec["grid"]
    assert set(protocol["claims"]) == {f"{p}_seconds" for p in problems} | {
        "digits_head_seconds_vs_dense"
    }
    for claim in protocol["claims"].values():
        assert len(claim["per_seed"]) == len(protocol["eval_seeds"]) == claim["n"]
        assert isinstance(claim["met"], bool) and claim["statistic"] == "bootstrap_lower_90"
    assert protocol["claims"]["digits_head_seconds_vs_dense"]["required"]  # issue 29
    for name in problems:
        arms = set(record["baseline"][name]) | {"compressed"}
        assert arms == (
            {"original", "compressed", "dense"}
            if name == "digits_head"
            else {"original", "compressed"}
        )
        assert set(record["method"][name]) == {str(s) for s in protocol["eval_seeds"]}
        for run in record["method"][name].values():
            assert run["setup_seconds"] > 0 and run["seconds_run"] > run["setup_seconds"]
    for arm in ("original", "compressed", "dense"):
        assert 0 <= record["head_test_accuracy"][arm]["median"] <= 1
    assert isinstance(record["protocol_violations"], list) and record["headline"]
    # an arm that never reached the target is said so in words, never as an inf or 0x ratio
    assert "inf" not in record["headline"] and " 0x" not in record["headline"]
