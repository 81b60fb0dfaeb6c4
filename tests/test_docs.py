"""The docs name only things that exist: every `--flag` and every dotted config key (`train.epochs`) in README.md
and docs/*.md.

Flags are read from the parsers themselves: `dlstudy COMMAND ...` must use COMMAND's flags (or the top-level
ones), `benchmarks/NAME.py ...` that script's argparse flags, `pytest ...` the options tests/conftest.py adds,
`torchrun ...` torchrun's own parser; a flag named elsewhere in prose must exist in one of those. Config keys are
`section.key` for the dataclass sections of dlstudy.config.RunConfig.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import re
import typing
from pathlib import Path

import pytest

from dlstudy.cli import build_parser
from dlstudy.config import RunConfig

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]

FLAG = re.compile(r"(?<![\w-])--[A-Za-z][\w-]*")
# a command and what follows it on the same line, up to a closing backtick or a shell comment
COMMAND_SPAN = re.compile(r"(?<![\w./-])dlstudy ([a-z]+(?:-[a-z]+)*)([^`\n#]*)")
BENCH_SPAN = re.compile(r"benchmarks/(\w+)\.py([^`\n#]*)")
PYTEST_SPAN = re.compile(r"(?<![\w.-])pytest([^`\n#]*)")
TORCHRUN_SPAN = re.compile(r"(?<![\w.-])torchrun((?:(?!dlstudy)[^`\n#])*)")  # its own flags stop at dlstudy
RAY_START_SPAN = re.compile(r"(?<![\w.-])ray start([^`\n#]*)")  # docs/cluster.md: starting a Ray cluster's nodes
# docs/tracking.md: opening the logs (the `tracking` extra's own command lines)
TRACKER_SPAN = re.compile(r"(?<![\w.-])(tensorboard|mlflow ui|mlflow server)( [^`\n#]*)")
# `section.key` not inside a longer dotted or path name (dlstudy.data.batches, docs/data.md) and not a call
CONFIG_KEY = re.compile(r"(?<![\w./-])([a-z]+)\.([a-z_][a-z0-9_]*)\b(?![.(/-])")
# `model.json`, `svm.yaml`, `train.py`: file names, not keys
FILE_SUFFIXES = {"py", "md", "json", "yaml", "yml", "csv", "pt", "npz", "html", "txt", "png", "gz", "zip", "tar", "jpg"}


def _parser_flags(parser: argparse.ArgumentParser) -> set[str]:
    return {o for a in parser._actions for o in a.option_strings if o.startswith("--")}


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _declared_flags(path: Path, method: str) -> set[str]:
    """The "--x" strings passed to `.<method>(...)` calls in a Python file (argparse scripts, pytest's addoption)."""
    flags = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == method:
            flags |= {a.value for a in node.args if isinstance(a, ast.Constant) and str(a.value).startswith("--")}
    return flags


def _torchrun_flags() -> set[str]:
    from torch.distributed.run import get_args_parser

    return _parser_flags(get_args_parser())


def _tracker_flags() -> dict[str, set[str]] | None:
    """The options of `tensorboard` and `mlflow ui` / `mlflow server`, read from their own parsers; None without
    the tracking extra."""
    try:
        from mlflow.cli import cli
        from tensorboard.plugins.core.core_plugin import CorePluginLoader
    except ImportError:
        return None
    parser = argparse.ArgumentParser()
    CorePluginLoader().define_flags(parser)
    server = {o for p in cli.commands["server"].params for o in p.opts if o.startswith("--")}
    return {"tensorboard": _parser_flags(parser), "mlflow ui": server, "mlflow server": server}


def _packaging_flags() -> set[str]:
    """`pip install`'s and `python -m build`'s options (installing the wheel beside another torch: README,
    docs/export.md), read from their own parsers."""
    from build.__main__ import main_parser
    from pip._internal.commands import create_command

    pip = {o for opt in create_command("install").parser._get_all_options() for o in opt._long_opts}
    return pip | _parser_flags(main_parser())


def _ray_start_flags() -> set[str] | None:
    """`ray start`'s options, read from Ray's own click command (the cluster extra); None without Ray."""
    try:
        from ray.scripts.scripts import start
    except ImportError:
        return None
    return {o for p in start.params for o in p.opts if o.startswith("--")}


@pytest.fixture(scope="module")
def known():
    top = build_parser()
    commands = {name: _parser_flags(sub) | _parser_flags(top) for name, sub in _subparsers(top).items()}
    benches = {p.stem: _declared_flags(p, "add_argument") | {"--help"} for p in (REPO / "benchmarks").glob("*.py")}
    pytest_flags = _declared_flags(REPO / "tests" / "conftest.py", "addoption")
    torchrun = _torchrun_flags()
    everything = set().union(*commands.values(), *benches.values(), pytest_flags, torchrun, _packaging_flags())
    return {"commands": commands, "benches": benches, "pytest": pytest_flags, "torchrun": torchrun,
            "ray": _ray_start_flags(), "trackers": _tracker_flags(), "all": everything}


def _doc_ids():
    return [p.relative_to(REPO).as_posix() for p in DOCS]


@pytest.mark.parametrize("doc", DOCS, ids=_doc_ids())
def test_every_flag_named_in_the_docs_exists(doc, known):
    text = doc.read_text()
    wrong = []
    for line_no, line in enumerate(text.splitlines(), start=1):
        for m in COMMAND_SPAN.finditer(line):
            if m.group(1) in known["commands"]:
                wrong += [f"{line_no}: dlstudy {m.group(1)} {f}" for f in FLAG.findall(m.group(2))
                          if f not in known["commands"][m.group(1)]]
        for m in BENCH_SPAN.finditer(line):
            flags = known["benches"].get(m.group(1))
            if flags is None:
                wrong.append(f"{line_no}: benchmarks/{m.group(1)}.py does not exist")
            else:
                wrong += [f"{line_no}: {m.group(1)}.py {f}" for f in FLAG.findall(m.group(2)) if f not in flags]
        for m in PYTEST_SPAN.finditer(line):
            wrong += [f"{line_no}: pytest {f}" for f in FLAG.findall(m.group(1)) if f not in known["pytest"]]
        for m in TORCHRUN_SPAN.finditer(line):
            wrong += [f"{line_no}: torchrun {f}" for f in FLAG.findall(m.group(1)) if f not in known["torchrun"]]
        ray_flags = {f for m in RAY_START_SPAN.finditer(line) for f in FLAG.findall(m.group(1))}
        if known["ray"] is not None:  # without Ray installed, `ray start` lines go unchecked
            wrong += [f"{line_no}: ray start {f}" for f in ray_flags if f not in known["ray"]]
        tracker_flags = set()
        for m in TRACKER_SPAN.finditer(line):
            tracker_flags |= set(FLAG.findall(m.group(2)))
            if known["trackers"] is not None:  # without the tracking extra, these lines go unchecked
                wrong += [f"{line_no}: {m.group(1)} {f}" for f in FLAG.findall(m.group(2))
                          if f not in known["trackers"][m.group(1)]]
        wrong += [f"{line_no}: {f}" for f in FLAG.findall(line)
                  if f not in known["all"] and f not in ray_flags and f not in tracker_flags]
    assert not wrong, f"{doc.name} names flags that do not exist:\n" + "\n".join(sorted(set(wrong)))


def _prose_lines(text: str):
    """(line number, line) outside ```python blocks, where `model.x` is an attribute of a model object, not a key."""
    in_python = False
    for line_no, line in enumerate(text.splitlines(), start=1):
        if line.startswith("```"):
            in_python = line.strip() == "```python"
        elif not in_python:
            yield line_no, line


def _is_module(section: str, key: str) -> bool:
    """`svm.selection` names the module dlstudy/svm/selection.py, not a config key."""
    package = REPO / "src" / "dlstudy" / section
    return (package / f"{key}.py").is_file() or (package / key / "__init__.py").is_file()


def _config_keys() -> dict[str, set[str]]:
    """{section: its keys} for each dataclass field of RunConfig (data, model, optim, train, loss, svm, eval)."""
    hints = typing.get_type_hints(RunConfig)
    return {name: {f.name for f in dataclasses.fields(tp)} for name, tp in hints.items() if dataclasses.is_dataclass(tp)}


@pytest.mark.parametrize("doc", DOCS, ids=_doc_ids())
def test_every_config_key_named_in_the_docs_exists(doc):
    sections = _config_keys()
    wrong = []
    for line_no, line in _prose_lines(doc.read_text()):
        for section, key in CONFIG_KEY.findall(line):
            if (section in sections and key not in sections[section] and key not in FILE_SUFFIXES
                    and not _is_module(section, key)):
                wrong.append(f"{line_no}: {section}.{key} ({section} keys: {sorted(sections[section])})")
    assert not wrong, f"{doc.name} names config keys that RunConfig does not have:\n" + "\n".join(wrong)


def test_the_scanners_find_what_they_should(known):
    """The patterns above on sample lines, so a too-narrow pattern cannot make the tests pass vacuously."""
    line = "x `dlstudy train --data digits --epochs 3` and `dlstudy svm --C 1` # --not-scanned"
    assert [(m.group(1), FLAG.findall(m.group(2))) for m in COMMAND_SPAN.finditer(line)] == [
        ("train", ["--data", "--epochs"]), ("svm", ["--C"])]
    assert "--epochs" in known["commands"]["train"] and "--epochs" not in known["commands"]["svm"]
    assert "--quick" in known["benches"]["bench_metrics"] and "--runslow" in known["pytest"]
    assert "--nproc-per-node" in known["torchrun"]
    assert [FLAG.findall(m.group(1)) for m in TORCHRUN_SPAN.finditer("torchrun --nnodes 2 -m dlstudy train --data x")] \
        == [["--nnodes"]]
    keys = CONFIG_KEY.findall("`train.epochs`, data.max_train=5, model.json, dlstudy.data.batches, model.train()")
    assert keys == [("train", "epochs"), ("data", "max_train"), ("model", "json")]
    assert "epochs" in _config_keys()["train"] and "max_train" in _config_keys()["data"]
    assert _is_module("svm", "selection") and not _is_module("train", "epochs")
    assert [n for n, _ in _prose_lines("a\n```python\nmodel.x\n```\nb\n```bash\nc\n```")] == [1, 5, 7]
    line = "`dlstudy export-logs runs/x --to mlflow` then `tensorboard --logdir runs` or `mlflow ui --port 5001`"
    assert [m.group(1) for m in COMMAND_SPAN.finditer(line)] == ["export-logs"]
    assert [(m.group(1), FLAG.findall(m.group(2))) for m in TRACKER_SPAN.finditer(line)] == [
        ("tensorboard", ["--logdir"]), ("mlflow ui", ["--port"])]
    if known["trackers"] is not None:
        assert "--logdir" in known["trackers"]["tensorboard"] and "--logdirx" not in known["trackers"]["tensorboard"]
        assert "--backend-store-uri" in known["trackers"]["mlflow ui"]


def test_make_bench_runs_what_the_readme_says(known):
    """The README's "`make bench` runs ..." sentence lists the Makefile's bench recipe, with the same flags."""
    makefile = (REPO / "Makefile").read_text()
    recipe = re.search(r"^bench:.*\n((?:\t.*\n)+)", makefile, re.M).group(1)
    ran = [m.group(1, 2) for m in re.finditer(r"benchmarks/(\w+)\.py([^\n]*)", recipe)]
    for script, flags in ran:
        assert set(FLAG.findall(flags)) <= known["benches"][script], f"Makefile: {script}.py {flags}"
    readme = " ".join((REPO / "README.md").read_text().split())  # sentences joined across line breaks
    sentence = re.search(r"`make bench` runs (.*?)\.(?: |$)", readme).group(1)
    told = re.findall(r"`(\w+)\.py((?: --[\w-]+)*)`", sentence)
    assert sorted((s, " ".join(FLAG.findall(f))) for s, f in ran) == sorted((s, f.strip()) for s, f in told)
