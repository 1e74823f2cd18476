"""One version string: pyproject.toml's, read back from the installed package's metadata."""

from importlib.metadata import version

import pytest

import raytrain_eff
from raytrain_eff import cli


def test_version_comes_from_package_metadata():
    assert raytrain_eff.__version__ == version("raytrain_eff")


def test_cli_prints_the_version(capsys):
    with pytest.raises(SystemExit) as done:
        cli.main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out.strip() == f"raytrain-eff {raytrain_eff.__version__}"
