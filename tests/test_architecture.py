"""The shape of the package: imports point down, small modules, no test doubles in the engine.

The layers are declared in `.importlinter` (import-linter's layers contract);
`lint-imports` fails on an import that runs up the layers or on a cycle.
ruff and mypy (strict, over the package, the tests and the benchmarks) run here too, so the test
command that CI runs checks them.
"""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "fastxfer"
MAX_MODULE_LINES = 800


def _tool(name: str) -> str:
    exe = Path(sys.executable).parent / name
    if exe.exists():
        return str(exe)
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed (pip install -e '.[dev]')")
    return found


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)


def _modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def test_imports_point_down_and_have_no_cycles() -> None:
    r = _run(_tool("lint-imports"), "--no-cache")
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]


def test_no_import_cycle_anywhere() -> None:
    """Also inside packages, which the layers contract does not look into."""
    import grimp

    graph = grimp.build_graph("fastxfer", exclude_type_checking_imports=True)
    cycles = [
        (module, imported)
        for module in sorted(graph.modules)
        for imported in sorted(graph.find_modules_directly_imported_by(module))
        if imported.startswith("fastxfer") and graph.chain_exists(imported, module)
    ]
    assert not cycles


def test_every_module_is_under_800_lines() -> None:
    too_long = {
        str(p.relative_to(ROOT)): n
        for p in _modules()
        if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_MODULE_LINES
    }
    assert not too_long


def test_no_test_double_outside_the_testing_package() -> None:
    found = []
    for p in _modules():
        if "testing" in p.relative_to(PACKAGE).parts:
            continue
        tree = ast.parse(p.read_text(encoding="utf-8"))
        found += [
            f"{p.relative_to(ROOT)}:{node.lineno} {node.name}"
            for node in ast.walk(tree)
            if isinstance(node, ast.ClassDef | ast.FunctionDef)
            and node.name.lstrip("_").startswith(("Fake", "Mock", "Stub", "Dummy"))
        ]
    assert not found


def test_the_engine_never_imports_the_testing_package_or_benchmarks() -> None:
    offenders = []
    for p in _modules():
        rel = p.relative_to(PACKAGE)
        if rel.parts[0] == "testing":
            continue
        for node in ast.walk(ast.parse(p.read_text(encoding="utf-8"))):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            offenders += [
                f"{rel}: {n}"
                for n in names
                if n.startswith(("fastxfer.testing", "benchmarks", "tests"))
            ]
    assert not offenders


def test_ruff_is_clean() -> None:
    r = _run(_tool("ruff"), "check", "fastxfer", "tests", "benchmarks")
    assert r.returncode == 0, r.stdout[-4000:]
    r = _run(_tool("ruff"), "format", "--check", "fastxfer", "tests", "benchmarks")
    assert r.returncode == 0, r.stdout[-4000:]


def test_mypy_strict_is_clean() -> None:
    r = _run(_tool("mypy"))
    assert r.returncode == 0, r.stdout[-4000:]
