"""The package's layers, read from the source (ast), so that a forbidden import anywhere (module level or inside a
function) fails: the core never imports the studies, the benchmarks or the command line, and nothing in the engine
imports Streamlit."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent / "influence_core"
CORE = ("data", "models", "curvature", "solvers", "sampling", "influence", "removal", "evaluation")
ABOVE_CORE = ("influence_core.studies", "influence_core.bench", "influence_core.cli")


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in the file, relative ones resolved."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = ".".join(path.relative_to(ROOT.parent).with_suffix("").parts[:-1])
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found.append((node.lineno, module))
            found += [(node.lineno, f"{module}.{alias.name}") for alias in node.names]
    return found


def violations(files: list[Path], forbidden: tuple[str, ...]) -> list[str]:
    return [
        f"{path.relative_to(ROOT.parent)}:{line} imports {name}"
        for path in files
        for line, name in imported_modules(path)
        if any(name == f or name.startswith(f + ".") for f in forbidden)
    ]


def core_files() -> list[Path]:
    files = [p for sub in CORE for p in sorted((ROOT / sub).rglob("*.py"))]
    return files + [p for p in sorted(ROOT.glob("*.py")) if p.name != "__main__.py"]


def test_the_core_never_imports_studies_benchmarks_or_the_command_line():
    assert len(core_files()) > 40  # the walk found the package
    assert violations(core_files(), ABOVE_CORE) == []


def test_no_streamlit_in_the_engine():
    assert violations(sorted(ROOT.rglob("*.py")), ("streamlit",)) == []


@pytest.mark.parametrize(
    "source, forbidden",
    [
        ("from influence_core.bench.common import torch_threads\n", True),
        ("def f():\n    from influence_core.cli import main\n", True),
        ("from ..studies import removal\n", True),
        ("import influence_core.studies.output as out\n", True),
        ("from influence_core.solvers import registry\n", False),
        ("from . import registry\n", False),
    ],
)
def test_the_check_sees_every_form_of_import(tmp_path, monkeypatch, source, forbidden):
    """The check itself fails on a forbidden import, whatever its form (so the tests above can fail)."""
    package = tmp_path / "influence_core" / "solvers"
    package.mkdir(parents=True)
    (package / "probe.py").write_text(source)
    monkeypatch.setattr(__import__(__name__), "ROOT", tmp_path / "influence_core")
    assert bool(violations([package / "probe.py"], ABOVE_CORE)) == forbidden


def test_matplotlib_is_an_optional_extra(monkeypatch):
    """Without matplotlib the studies' plots fail with one line naming the extra; the core never needs it."""
    import sys

    from influence_core.bench.common import MissingExtraError
    from influence_core.studies.output import pyplot

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now raises ModuleNotFoundError
    with pytest.raises(MissingExtraError, match=r"pip install -e '\.\[plots\]'"):
        pyplot()
    assert violations(core_files(), ("matplotlib",)) == []
    pyproject = (ROOT.parent / "pyproject.toml").read_text()
    dependencies = pyproject.split("dependencies = [", 1)[1].split("]", 1)[0]
    assert "matplotlib" not in dependencies and 'plots = ["matplotlib' in pyproject


APP_MODULES_ALLOWED = ("influence_core.evaluation.metrics", "influence_core.studies")
"""What the app may import besides the public API: the metrics module (used as ``metrics.<name>``) and the studies
it runs live (the LDS page)."""


def test_the_app_uses_the_public_api():
    import influence_core

    app_files = (
        sorted((ROOT.parent / "ui").glob("*.py"))
        + sorted((ROOT.parent / "pages").glob("*.py"))
        + [ROOT.parent / "app.py"]
    )
    bad = []
    for path in app_files:
        for line, name in imported_modules(path):
            if not name.startswith("influence_core") or name == "influence_core":
                continue
            if (
                name.startswith("influence_core.")
                and name.count(".") == 1
                and name.split(".")[1] in influence_core.__all__
            ):
                continue  # from influence_core import <public name>
            if name == "influence_core.evaluation" or any(
                name == a or name.startswith(a + ".") for a in APP_MODULES_ALLOWED
            ):
                continue
            bad.append(f"{path.name}:{line} {name}")
    assert bad == []
    assert all(getattr(influence_core, name) is not None for name in influence_core.__all__)


def test_studies_parse_no_command_line_and_import_no_cli():
    """A study is a function of its config; its command (flags, parsing, printing) lives in ``cli/``."""
    files = sorted((ROOT / "studies").glob("*.py"))
    assert files
    assert violations(files, ("argparse", "influence_core.cli")) == []
