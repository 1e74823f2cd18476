"""The import rules between the package's layers, read from every module's source with ``ast``
(imports inside functions and ``TYPE_CHECKING`` blocks count too):

- ``blocks`` (what tasks and methods share) imports neither of them, nor anything above;
- ``methods`` never import ray, ``engine``, ``tune``, ``report``, ``cli`` or ``monitor``
  (``monitor.keys``, the import-free vocabulary of statistic names, excepted);
- ``tasks`` never import ``methods``, ray or ``engine``;
- ``engine`` names no method or task (only ``methods.base`` and ``tasks.base``);
- ``tune`` and ``report`` do not import each other.
"""

from __future__ import annotations

import ast
import pathlib
import textwrap

import pytest

pytestmark = pytest.mark.unit

ROOT = pathlib.Path(__file__).resolve().parents[1]
PKG = "raytrain_eff"
UPPER = ("engine", "tune", "report", "cli", "monitor")
SEAMS = {f"{PKG}.methods.base", f"{PKG}.tasks.base"}
KEYS = f"{PKG}.monitor.keys"  # constants only, no imports: the names methods report under


def module_name(path: pathlib.Path, root: pathlib.Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: pathlib.Path, root: pathlib.Path) -> set[str]:
    """Every module ``path`` imports, anywhere in it; ``from a import b`` gives ``a.b`` when b
    is a module of the package (so ``from raytrain_eff.methods import fosi`` is caught)."""
    name = module_name(path, root)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the package, one level up per extra dot
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                is_module = (root / pathlib.Path(*sub.split("."))).is_dir() or (
                    root / pathlib.Path(*sub.split("."))
                ).with_suffix(".py").is_file()
                found.add(sub if is_module else base)
    return found


def _under(module: str, *prefixes: str) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def _layer_rules(importer: str, imported: str) -> str | None:
    """Why ``importer`` may not import ``imported``; None when it may."""
    layer = importer.split(".")[1] if importer.count(".") else ""
    upper = tuple(f"{PKG}.{u}" for u in UPPER)
    if layer == "blocks" and _under(imported, "ray", f"{PKG}.tasks", f"{PKG}.methods", *upper):
        return "blocks sit below tasks and methods: they import neither, nor ray or the glue"
    if layer == "methods" and imported != KEYS and _under(imported, "ray", *upper):
        return "methods are pure PyTorch: no ray, engine, tune, report, cli or monitor"
    if layer == "tasks" and _under(imported, "ray", f"{PKG}.methods", f"{PKG}.engine"):
        return "tasks never import methods, ray or the engine (shared parts go in blocks/)"
    if (
        layer == "engine"
        and imported not in SEAMS
        and _under(imported, f"{PKG}.methods", f"{PKG}.tasks")
        and imported not in (f"{PKG}.methods", f"{PKG}.tasks")
    ):
        return "the engine names no method or task: it reaches them through catalog"
    if layer == "tune" and _under(imported, f"{PKG}.report"):
        return "tune and report do not import each other"
    if layer == "report" and _under(imported, f"{PKG}.tune"):
        return "tune and report do not import each other"
    return None


def violations(root: pathlib.Path) -> list[str]:
    """'module imports other: why' for every import that breaks a layer rule under root."""
    out = []
    for path in sorted((root / PKG).rglob("*.py")):
        importer = module_name(path, root)
        for imported in sorted(imports(path, root)):
            why = _layer_rules(importer, imported)
            if why:
                out.append(f"{importer} imports {imported}: {why}")
    return out


def test_the_package_keeps_its_layers():
    assert violations(ROOT) == []


def test_the_metric_vocabulary_that_methods_may_import_imports_nothing():
    assert imports(ROOT / PKG / "monitor" / "keys.py", ROOT) <= {
        "__future__.annotations",
        "__future__",
    }


def _tree(tmp_path: pathlib.Path, files: dict[str, str]) -> pathlib.Path:
    for rel, text in files.items():
        path = tmp_path / PKG / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    for pkg in {p.parent for p in (tmp_path / PKG).rglob("*.py")} | {tmp_path / PKG}:
        (pkg / "__init__.py").touch()
    return tmp_path


def test_the_checker_finds_each_kind_of_violation(tmp_path):
    root = _tree(
        tmp_path,
        {
            "methods/fosi.py": "",
            "methods/base.py": "",
            "tasks/lm.py": "",
            "tasks/wide.py": """
            def build():
                from raytrain_eff.methods.fosi import FOSI  # inside a function
                return FOSI
            """,
            "tasks/erm.py": "from raytrain_eff.methods import fosi\n",
            "methods/dho2.py": "import ray.train\nfrom ..engine import runner\n",
            "methods/mst.py": "from raytrain_eff.monitor import keys, metrics\n",
            "engine/runner.py": "from raytrain_eff.methods import base\n"
            "from raytrain_eff.tasks.lm import LMTask\n",
            "engine/preflight.py": "from raytrain_eff.tasks.base import Task\n",
            "monitor/keys.py": "",
            "monitor/metrics.py": "",
            "tune/results.py": "def plots():\n    from raytrain_eff.report.plots import f\n",
            "report/build.py": "from raytrain_eff.tune import results\n",
            "report/plots.py": "",
            "blocks/layer.py": "from raytrain_eff.tasks import lm\n",
        },
    )
    found = violations(root)
    assert [v.split(":")[0] for v in found] == [
        "raytrain_eff.blocks.layer imports raytrain_eff.tasks.lm",
        "raytrain_eff.engine.runner imports raytrain_eff.tasks.lm",
        "raytrain_eff.methods.dho2 imports ray.train",
        "raytrain_eff.methods.dho2 imports raytrain_eff.engine.runner",
        "raytrain_eff.methods.mst imports raytrain_eff.monitor.metrics",
        "raytrain_eff.report.build imports raytrain_eff.tune.results",
        "raytrain_eff.tasks.erm imports raytrain_eff.methods.fosi",
        "raytrain_eff.tasks.wide imports raytrain_eff.methods.fosi",
        "raytrain_eff.tune.results imports raytrain_eff.report.plots",
    ]
    assert "tasks never import methods" in found[-2]
