"""Driver-side checks that fail before any worker starts."""
import pytest

from raytrain_eff import config
from raytrain_eff.engine import preflight


def test_flex_attention_without_a_gpu_is_refused_before_launch():
    cfg = config.load(preset="gpt-mst", overrides=["methods.mst.attention_kernel=flex"])
    with pytest.raises(ValueError, match="methods.mst.attention_kernel=flex needs "
                                         "scaling.use_gpu=true"):
        preflight.check(cfg)


def test_cpu_kernels_pass():
    for kernel in ("masked", "tiles"):
        preflight.check(config.load(preset="gpt-mst",
                                    overrides=[f"methods.mst.attention_kernel={kernel}"]))
