"""bench/exporter.py --smoke runs end to end and writes the DESIGN.md record, with the protocol
record of an overhead benchmark (nothing tuned, pairs as evaluation seeds, paired claims): its
throughput arms are the packaged preset trained by the product's Runner, exporter off and on.
Timings are not asserted."""

from smoke import run_smoke


def test_exporter_bench_smoke(tmp_path):
    record = run_smoke("exporter", tmp_path, timeout=280)
    config = record["config"]
    assert config["preset"] == "digits-sgd"
    assert f"run.steps={config['steps']}" in config["overrides"]
    for side in ("baseline", "method"):  # one Runner per pair and arm, its set-up apart
        for key in ("samples_per_s", "samples_per_cpu_s", "setup_s"):
            assert len(record[side][key]["values"]) == config["pairs"]
    for key in ("throughput_on_over_off", "cpu_throughput_on_over_off"):
        ratios = record["ratios"][key]["values"]
        assert len(ratios) == record["config"]["pairs"] and all(r > 0 for r in ratios)
    assert record["throughput_judged_on"] in ("wall", "cpu")
    scrape = record["method"]["scrape"]
    assert set(scrape) == {"node0", "node1"}
    # 8 workers' series per node: every worker exports dozens of samples
    assert all(n["samples"] > 8 * 30 and n["seconds"]["median"] > 0 for n in scrape.values())

    assert isinstance(record["headline"], str) and record["headline"]
    protocol = record["protocol"]
    assert protocol["kind"] == "overhead"
    arms = protocol["arms"]
    assert arms["exporter off"] == arms["exporter on"] and protocol["alternation"]
    assert protocol["tuning"] == {} and set(protocol["untuned"]) == set(arms)
    assert protocol["eval_seeds"] == list(range(record["config"]["pairs"]))
    assert not set(protocol["eval_seeds"]) & set(protocol["tuning_seeds"])
    claims = protocol["claims"]
    main = record["main_claim"]
    assert set(claims) == {
        "throughput_on_over_off",
        "cpu_throughput_on_over_off",
        main + "_floor",
        "scrape_p95_s",
    }
    for key in ("throughput_on_over_off", "cpu_throughput_on_over_off"):
        claim = claims[key]
        assert claim["seeds"] == protocol["eval_seeds"] and claim["required"] == (key == main)
        assert claim["per_seed"] == record["ratios"][key]["values"]
        assert claim["worst"] == min(claim["per_seed"]) and "bootstrap_lower_90" in claim
    scrape_claim = claims["scrape_p95_s"]
    assert scrape_claim["kind"] == "bound" and scrape_claim["seeds"] == ["node0", "node1"]
    assert scrape_claim["met"] == (scrape_claim["worst"] < 0.05)
    # smoke runs 2 pairs: the protocol check says so, and met is false
    assert any("evaluation seeds" in v for v in record["protocol_violations"])
    assert not record["met_if_committed"] and not record["met"]
