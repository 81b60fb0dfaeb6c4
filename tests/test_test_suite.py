"""Rules that keep the test suite able to fail loudly: dlstudy's own modules are imported plainly (an ImportError
is a failure, never a skip), and no test module imports another (shared helpers live in helpers.py, shared fixtures
in conftest.py), so each file runs on its own and a fixture has one home."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
TEST_FILES = sorted(TESTS.glob("test_*.py"))


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
