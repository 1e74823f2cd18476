"""Config loading, overrides and validation: every error names field, value and what is allowed."""

import re
import shlex
import subprocess
import sys

import pytest
import yaml
from timeouts import scaled

from raytrain_eff import config
from raytrain_eff.typed import ConfigError


def test_default_preset_loads_and_round_trips():
    cfg = config.load()
    assert cfg.task.name == "lm" and "adamw" in cfg.methods
    again = config.from_dict(yaml.safe_load(config.dump(cfg)))
    assert again == cfg


def test_every_packaged_preset_validates():
    names = config.preset_names()
    assert "default" in names
    for name in names:
        cfg = config.load(preset=name)
        assert cfg.preset == name
        assert config.preset_description(name), f"preset {name} lacks a description line"


def test_every_method_preset_names_a_baseline_that_loads():
    """The description line names its baseline: a preset, or that preset with overrides
    (quoted); each must load as a config (the README promises it)."""
    baselines = {"sgd", "adamw", "prox-svrg", "katyusha"}
    for name in config.preset_names():
        if set(config.load(preset=name).methods) <= baselines:
            continue
        line = config.preset_description(name)
        if "baseline of" in line:  # a baseline itself (wide-dense runs the method's dense path)
            continue
        assert re.search(r"baselines?: ", line), f"preset {name} names no baseline: {line}"
        named = re.split(r"\. |\(", re.split(r"baselines?: ", line, maxsplit=1)[1])[0]
        for each in re.split(r",\s*", named.strip().rstrip(".")):
            preset, *overrides = shlex.split(each)
            config.load(preset=preset, overrides=overrides)


def test_overrides_set_nested_values_and_parse_yaml():
    cfg = config.load(
        overrides=[
            "run.steps=7",
            "methods.adamw.lr=1e-4",
            "data.batch_size=8",
            "train.grad_clip=null",
        ]
    )
    assert (cfg.run.steps, cfg.methods["adamw"].lr, cfg.data.batch_size) == (7, 1e-4, 8)
    assert cfg.train.grad_clip is None


def test_override_can_add_a_method_by_name():
    cfg = config.load(preset="digits-adamw", overrides=["methods.mst.sparsity=0.5"])
    assert list(cfg.methods) == ["adamw", "mst"] and cfg.methods["mst"].sparsity == 0.5


@pytest.mark.parametrize(
    "override, message",
    [
        ("run.stpes=3", "run.stpes: unknown key (did you mean 'steps'?)"),
        ("run.steps=-5", "run.steps: -5 is invalid; must be an integer > 0"),
        ("run.steps=abc", "run.steps: expected int, got 'abc'"),
        ("run.steps=2.5", "run.steps: expected int, got 2.5"),
        ("methods.adamx.lr=1", "unknown method 'adamx' (did you mean 'adamw'?)"),
        ("methods.adamw.lr=0", "methods.adamw.lr: 0.0 is invalid; must be > 0"),
        ("train.decay=cosin", "train.decay: 'cosin' is not allowed (did you mean 'cosine'?)"),
        ("scaling.placement=spread", "choose one of 'PACK', 'SPREAD'"),
        ("scaling.backend=nccl", "scaling.backend: 'nccl' is invalid"),
        (
            "scaling.min_workers=3",
            "scaling.min_workers: 3 is invalid; must be unset, or an integer "
            "from 1 to num_workers (2)",
        ),
        (
            "run.checkpoint_interval=75",
            "run.checkpoint_interval: 75 is invalid; must be a positive "
            "multiple of report_interval (50)",
        ),
        ("task.name=lmm", "unknown task 'lmm' (did you mean 'lm'?)"),
        ("task.n_embd=130", "task.n_embd: 130 is invalid; must be a multiple of n_head (4)"),
        ("run.name=../escape", "run.name: '../escape' is invalid"),
        ("monitr.port=1", "monitr: unknown key (did you mean 'monitor'?)"),
        ("data.batch_size=true", "data.batch_size: expected int, got True"),
    ],
)
def test_bad_values_fail_with_a_helpful_message(override, message):
    with pytest.raises(ConfigError) as err:
        config.load(overrides=[override])
    assert message in str(err.value)
    assert "preset 'default'" in str(err.value)


def test_malformed_override_and_unknown_preset():
    with pytest.raises(ConfigError, match="expected dotted.key=value"):
        config.load(overrides=["run.steps"])
    with pytest.raises(
        ConfigError, match="unknown preset 'defualt' \\(did you mean 'default'\\?\\)"
    ):
        config.load(preset="defualt")


def test_config_file_errors_name_the_file(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text("task: {name: lm}\nmethods: {adamw: {lr: 1.0e-3}}\nrun: {steps: 0}\n")
    with pytest.raises(ConfigError) as err:
        config.load(path=str(path))
    assert str(path) in str(err.value) and "run.steps: 0 is invalid" in str(err.value)
    with pytest.raises(ConfigError, match="does not exist"):
        config.load(path=str(tmp_path / "missing.yaml"))
    (tmp_path / "bad.yaml").write_text("task: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        config.load(path=str(tmp_path / "bad.yaml"))


def test_methods_section_is_required():
    with pytest.raises(ConfigError, match="methods: expected a mapping"):
        config.from_dict({"task": {"name": "lm"}})


def test_broken_config_fails_before_torch_or_ray_is_imported():
    code = (
        "import sys\nfrom raytrain_eff import cli\n"
        "rc = cli.main(['train', 'run.stpes=3'])\n"
        "assert rc == 2, rc\n"
        "bad = [m for m in ('torch', 'ray') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=scaled(60)
    )
    assert proc.returncode == 0, proc.stderr
    assert "did you mean 'steps'" in proc.stderr


@pytest.mark.parametrize(
    "override, message",
    [
        ("data.shuffle_window=0", "data.shuffle_window: 0"),
        ("data.cache_row_groups=0", "data.cache_row_groups: 0"),
        ("data.val_dataset=''", "data.val_dataset"),
        ("task.vocab=words", "task.vocab"),
    ],
)
def test_streaming_keys_are_validated_by_name(override, message):
    with pytest.raises(ConfigError, match=message):
        config.load(overrides=[override])
