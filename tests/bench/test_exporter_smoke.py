"""bench/exporter.py --smoke runs end to end and writes the DESIGN.md record."""
from smoke import run_smoke


def test_exporter_bench_smoke(tmp_path):
    record = run_smoke("exporter", tmp_path, timeout=280)
    assert record["met"] == (record["met_throughput"] and record["met_scrape"])
    for key in ("throughput_on_over_off", "cpu_throughput_on_over_off"):
        ratios = record["ratios"][key]["values"]
        assert len(ratios) == record["config"]["pairs"] and all(r > 0 for r in ratios)
    assert record["throughput_judged_on"] in ("wall", "cpu")
    scrape = record["method"]["scrape"]
    assert set(scrape) == {"node0", "node1"}
    # 8 workers' series per node: every worker exports dozens of samples
    assert all(n["samples"] > 8 * 30 and n["seconds"]["median"] > 0 for n in scrape.values())
