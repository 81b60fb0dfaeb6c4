"""Rules that keep the test suite able to fail loudly: dlstudy's own modules are imported plainly (an ImportError
is a failure, never a skip), and no test module imports another (shared helpers live in helpers.py, shared fixtures
in conftest.py), so each file runs on its own and a fixture has one home."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
TEST_FILES = sorted(TESTS.rglob("test_*.py"))  # grouped by package: tests/<package>/test_*.py


def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), filename=str(path))


@pytest.mark.parametrize("path", TEST_FILES, ids=[p.name for p in TEST_FILES])
def test_no_importorskip_of_dlstudy(path):
    skipped = [node.args[0].value for node in ast.walk(_tree(path))
               if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
               and node.func.attr == "importorskip" and node.args and isinstance(node.args[0], ast.Constant)
               and str(node.args[0].value).split(".")[0] == "dlstudy"]
    assert not skipped, f"{path.name}: import {skipped} plainly (importorskip is for optional third-party tools)"


@pytest.mark.parametrize("path", [*TEST_FILES, TESTS / "conftest.py", TESTS / "helpers.py"],
                         ids=[p.name for p in [*TEST_FILES, TESTS / "conftest.py", TESTS / "helpers.py"]])
def test_no_test_module_imports_another(path):
    imported = set()
    for node in ast.walk(_tree(path)):
        if isinstance(node, ast.Import):
            imported |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            imported.add(node.module)
    test_modules = sorted(m for m in imported if m.split(".")[0].startswith("test_") or m.split(".")[0] == "conftest")
    assert not test_modules, f"{path.name} imports {test_modules}: move what it needs to helpers.py or conftest.py"


SRC_PACKAGES = {p.name for p in (TESTS.parent / "src" / "dlstudy").iterdir() if (p / "__init__.py").is_file()}


def test_tests_are_grouped_by_package_as_src_is():
    """tests/<package>/ for a package of src/dlstudy, tests/ itself for the top-level modules."""
    folders = {p.parent.name for p in TEST_FILES if p.parent != TESTS}
    assert folders and folders <= SRC_PACKAGES, f"test folders that are no package of dlstudy: {folders - SRC_PACKAGES}"
    names = [p.name for p in TEST_FILES]
    assert len(names) == len(set(names)), "two test files share a name (pytest imports them by basename)"


@pytest.mark.parametrize("path", TEST_FILES, ids=[p.name for p in TEST_FILES])
def test_shared_fixtures_have_one_home(path):
    """The one-thread fixture and the tiny_cfg factory live in conftest.py only."""
    defined = {node.name for node in ast.walk(_tree(path)) if isinstance(node, ast.FunctionDef)}
    assert not defined & {"_one_thread", "tiny_cfg"}, f"{path.name} redefines {defined & {'_one_thread', 'tiny_cfg'}}"
