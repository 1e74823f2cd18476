"""The engine-overhead benchmark runs end to end in --smoke mode and writes its JSON."""
from smoke import run_smoke


def test_engine_overhead_smoke(tmp_path):
    record = run_smoke("engine_overhead", tmp_path, timeout=600)
    assert record["method"]["steps_per_s"]["median"] > 0
    assert record["baseline"]["steps_per_s"]["median"] > 0
    assert record["machine"]["nproc"] >= 1
