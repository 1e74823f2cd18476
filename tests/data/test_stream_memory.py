"""The issue's "done when": a worker's memory does not grow with the data set. Two text
corpora, one four times the other (about 25 MB and 100 MB of KJV text), each train a few steps
through the installed ``raytrain-eff train --config`` in local mode; their peak RSS (the
subprocess's ru_maxrss from wait4) agree within 10%, and both runs train."""

import os
import pathlib
import shutil
import subprocess

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from raytrain_eff.data.corpus import kjv_verses

REPO = pathlib.Path(__file__).resolve().parents[2]
MB = 1 << 20


def write_corpus(path: pathlib.Path, verses: pa.Array, megabytes: int) -> int:
    """KJV verses repeated to ``megabytes`` of text, in row groups of 8,192 verses (~1 MB)."""
    rows, text_bytes = 0, 0
    with pq.ParquetWriter(path, pa.schema({"text": pa.string()})) as writer:
        while text_bytes < megabytes * MB:
            writer.write_table(pa.table({"text": verses}), row_group_size=8192)
            rows += len(verses)
            text_bytes += verses.nbytes
    return rows


def train_peak_rss(tmp_path: pathlib.Path, dataset: pathlib.Path, name: str) -> int:
    """Peak RSS in bytes of ``raytrain-eff train --config ... scaling.num_workers=0``."""
    cfg = {
        "task": {"name": "lm", "seq_len": 64, "n_layer": 2, "n_head": 2, "n_embd": 64},
        "data": {"dataset": str(dataset), "batch_size": 16},
        "methods": {"adamw": {"lr": 3.0e-3}},
        "train": {"warmup_steps": 0},
        "run": {
            "steps": 30,
            "eval_interval": 15,
            "eval_batches": 4,
            "report_interval": 15,
            "checkpoint_interval": 15,
            "storage_path": str(tmp_path),
            "name": name,
        },
        "monitor": {"enabled": False, "progress": False},
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    script = shutil.which("raytrain-eff")
    assert script, "the raytrain-eff console script is not installed (pip install -e .)"
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    proc = subprocess.Popen(
        [script, "train", "--config", str(path), "scaling.num_workers=0"],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    out = proc.stdout.read().decode(errors="replace")
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    assert proc.returncode == 0, out[-3000:]
    return usage.ru_maxrss * 1024  # kilobytes on Linux


@pytest.mark.timeout(180)
def test_peak_worker_memory_does_not_grow_with_the_corpus(tmp_path):
    verses = pa.array([v["text"] for v in kjv_verses()])
    rss, losses = {}, {}
    for mb in (25, 100):
        dataset = tmp_path / f"kjv-{mb}mb.parquet"
        write_corpus(dataset, verses, mb)
        rss[mb] = train_peak_rss(tmp_path, dataset, f"mem-{mb}")
        table = pq.read_table(tmp_path / f"mem-{mb}" / "metrics.parquet")
        losses[mb] = table.column("loss").to_pylist()
    print(f"peak RSS: 25 MB corpus {rss[25] / MB:.0f} MiB, 100 MB corpus {rss[100] / MB:.0f} MiB")
    for mb, loss in losses.items():
        assert len(loss) == 30 and sum(loss[-5:]) < sum(loss[:5]), f"{mb} MB corpus: {loss}"
    assert abs(rss[100] - rss[25]) <= 0.10 * rss[25], rss
