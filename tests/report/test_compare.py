"""`compare` end to end on tiny presets in Train's local mode: page, provenance, Chromium."""

import argparse
import html.parser
import math
import pathlib
import re
import shutil
import subprocess

import pandas as pd
import pytest
from timeouts import scaled

from raytrain_eff.report import build, commands
from raytrain_eff.report.compare import compare
from raytrain_eff.typed import ConfigError

SECTIONS = {
    "verdict": 0,
    "setup": 0,
    "curves": 3,
    "target": 1,
    "memory": 1,
    "throughput": 1,
    "cost": 1,
    "runs": 0,
}
TINY = [
    "run.steps=30",
    "scaling.num_workers=0",
    "run.eval_interval=10",
    "run.report_interval=10",
    "run.checkpoint_interval=30",
    "monitor.enabled=false",
]


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    root = tmp_path_factory.mktemp("compare")
    out = compare(
        "digits-adamw",
        "digits-sgd",
        seeds=2,
        overrides=[*TINY, f"run.storage_path={root / 'runs'}"],
        price_per_node_hour=3.0,
        out_dir=str(root / "report"),
    )
    return pathlib.Path(out)


class Page(html.parser.HTMLParser):
    """Sections with their images, every table-backed span, and the text outside them."""

    def __init__(self):
        super().__init__()
        self.section, self.images, self.spans, self.loose = None, {}, [], []
        self.stack, self.skip = [], 0

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "section":
            self.section = attrs["id"]
            self.images[self.section] = []
        if tag == "img":
            self.images[self.section].append(attrs["src"])
        if tag in ("style", "title"):
            self.skip += 1
        if tag == "span" and "data-table" in attrs:
            self.spans.append({**attrs, "text": ""})
            self.stack.append(True)
        elif tag == "span":
            self.stack.append(False)

    def handle_endtag(self, tag):
        if tag in ("style", "title"):
            self.skip -= 1
        if tag == "span":
            self.stack.pop()

    def handle_data(self, data):
        if self.stack and self.stack[-1]:
            self.spans[-1]["text"] += data
        elif not self.skip:
            self.loose.append(data)


def parse(path) -> Page:
    page = Page()
    page.feed(pathlib.Path(path).read_text())
    return page


def test_page_has_every_section_with_its_plots(report):
    page = parse(report / "report.html")
    assert list(page.images) == list(SECTIONS)
    for section, n in SECTIONS.items():
        assert len(page.images[section]) == n, section
        for src in page.images[section]:
            assert src.startswith("data:image/png;base64,") and len(src) > 5000
    assert len(list((report / "plots").glob("*.png"))) == sum(SECTIONS.values())
    tables = {p.stem for p in (report / "tables").glob("*.parquet")}
    assert {"settings", "comparison", "runs", "setup", "curves"} <= tables
    runs = pd.read_parquet(report / "tables" / "runs.parquet")
    assert sorted(runs.side) == ["digits-adamw"] * 2 + ["digits-sgd"] * 2
    assert sorted(runs.seed) == [0, 0, 1, 1] and (runs.steps == 30).all()
    assert (runs.samples == 30 * 64).all()  # the same budget on both sides
    setup = pd.read_parquet(report / "tables" / "setup.parquet")
    # plain optimizers step at their scheduled LR: no hidden multiplier on either side
    assert (setup.effective_peak_lr == setup.peak_lr).all() and (setup.peak_lr > 0).all()


def test_every_number_on_the_page_is_a_cell_of_its_parquet_table(report):
    page = parse(report / "report.html")
    tables = {p.stem: pd.read_parquet(p) for p in (report / "tables").glob("*.parquet")}
    numbers = 0
    for span in page.spans:
        value = tables[span["data-table"]][span["data-col"]].iloc[int(span["data-row"])]
        shown = span["text"]
        if span["class"] == "text":
            assert shown == (value or ""), span
        elif span["class"] == "bool":
            assert shown == ("yes" if value else "no"), span
        else:
            numbers += 1
            _assert_shows(shown, value, span)
    assert numbers > 100
    loose = "".join(page.loose)
    assert not re.search(r"\d", loose), re.findall(r".{20}\d.{20}", loose)
    # the verdict names the quantities and calls each one
    assert "beyond seed spread" in "".join(
        s["text"] for s in page.spans
    ) or "within seed noise" in "".join(s["text"] for s in page.spans)


def _assert_shows(shown: str, value, span):
    value = float(value)
    if math.isnan(value):
        assert shown == "n/a", span
    elif math.isinf(value):
        assert shown == "not reached", span
    else:
        assert float(shown) == pytest.approx(value, rel=6e-4, abs=0), span


def test_page_renders_in_headless_chromium(report, tmp_path):
    exe = shutil.which("chromium")
    assert exe, "chromium is missing: run `bash scripts/test-deps.sh`"
    shot = tmp_path / "page.png"
    subprocess.run(
        [
            exe,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={tmp_path / 'profile'}",
            f"--screenshot={shot}",
            "--window-size=1280,4000",
            (report / "report.html").as_uri(),
        ],
        check=True,
        capture_output=True,
        timeout=scaled(120),
    )
    from PIL import Image

    image = Image.open(shot).convert("RGB")
    assert image.size == (1280, 4000)
    small = image.resize((320, 1000))
    pixels = [small.getpixel((x, y)) for y in range(1000) for x in range(320)]
    inked = sum(1 for p in pixels if sum(p) < 600) / len(pixels)
    assert len(set(pixels)) > 200 and inked > 0.02  # text, tables and plots, not a blank page


def _args(argv):
    parser = argparse.ArgumentParser()
    commands.add_commands(parser.add_subparsers())
    return parser.parse_args(argv)


def test_report_command_rebuilds_the_same_numbers_from_the_run_dirs(report, tmp_path):
    settings = pd.read_parquet(report / "tables" / "settings.parquet")
    a_dirs, b_dirs = (settings[c].iloc[0].split(", ") for c in ("source_a", "source_b"))
    out = tmp_path / "again"
    target = repr(float(settings.target.iloc[0]))  # else the swapped baseline sets the target
    args = _args(["report", b_dirs[1], *a_dirs, b_dirs[0], "--out", str(out), "--target", target])
    assert args.func(args) == 0
    first = pd.read_parquet(report / "tables" / "comparison.parquet")
    again = pd.read_parquet(out / "tables" / "comparison.parquet")
    # the first directory given was a baseline run, so the sides come out swapped
    pd.testing.assert_series_equal(first.median_a, again.median_b, check_names=False)
    pd.testing.assert_series_equal(first.max_b, again.max_a, check_names=False)
    one_group = _args(["report", *a_dirs, "--out", str(tmp_path / "x")])
    with pytest.raises(ConfigError, match="form 1 config group"):
        one_group.func(one_group)


def test_a_sweep_side_is_represented_by_its_best_config(report, tmp_path):
    settings = pd.read_parquet(report / "tables" / "settings.parquet")
    a_dirs, b_dirs = (settings[c].iloc[0].split(", ") for c in ("source_a", "source_b"))
    sweep = tmp_path / "sweep-opt"
    for i, d in enumerate(a_dirs[:1] + b_dirs[:1]):  # a sweep's layout: trials/<sweep>-<id>
        shutil.copytree(d, sweep / "trials" / f"sweep-opt-t{i}")
    out = build.build_report([str(sweep)], b_dirs, str(tmp_path / "tuned"), 1.0)
    groups = pd.read_parquet(pathlib.Path(out) / "tables" / "groups.parquet")
    a = groups[groups.side == "A"]
    assert sorted(a.label) == ["digits-adamw", "digits-sgd"]
    best = a.loc[a.median_final_val_loss.idxmin()]
    assert best.chosen and a.chosen.sum() == 1


def test_sides_must_share_data_scaling_and_budget(tmp_path):
    other = tmp_path / "bigger-batch.yaml"
    text = (pathlib.Path(build.__file__).parent.parent / "presets" / "digits-sgd.yaml").read_text()
    other.write_text(text.replace("batch_size: 64", "batch_size: 128"))
    fix = r"data\.batch_size \(64 vs 128\).*e\.g\. data\.batch_size=64"
    with pytest.raises(ConfigError, match=fix):
        compare("digits-adamw", str(other), seeds=1, overrides=TINY, out_dir=str(tmp_path))
    with pytest.raises(ConfigError, match="seeds: 0"):
        compare("digits-adamw", "digits-sgd", seeds=0)
