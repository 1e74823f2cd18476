"""raytrain_eff: efficient-training methods on Ray Train, tuned with Ray Tune, watched in
Grafana."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("raytrain_eff")  # the one version string: pyproject.toml's
except PackageNotFoundError:  # a source tree on sys.path that was never pip-installed
    __version__ = "0+unknown"
