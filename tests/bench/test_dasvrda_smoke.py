"""bench/dasvrda.py --smoke runs end to end and writes the DESIGN.md record."""
from smoke import run_smoke


def test_dasvrda_bench_smoke(tmp_path):
    record = run_smoke("dasvrda", tmp_path, timeout=300)
    (setting,) = record["method"]["settings"]
    assert set(setting["seconds_to_eps"]) == {"dasvrda", "prox-svrg", "katyusha", "saga"}
    assert len(setting["seconds_to_eps"]["dasvrda"]["values"]) == 3     # three seeds
    assert setting["certified_gap"] >= 0
    assert record["method"]["data_parallel"]["ranks_equal"] is True
    assert [r["b"] for r in record["method"]["batch_sweep"]["runs"]] == sorted(
        r["b"] for r in record["method"]["batch_sweep"]["runs"])
