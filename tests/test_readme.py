"""The README and docs/ say what the code does: set-up commands, runnable Python, links that resolve."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))

SETUP = ["pip install . && itp demo", 'pip install ".[test]" && pytest']


def fenced(text: str, lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", text, re.S)


def test_readme_opens_with_the_two_setup_commands() -> None:
    text = README.read_text("utf-8")
    first_block = re.search(r"```(\w*)\n(.*?)```", text, re.S)
    assert first_block is not None
    # Nothing but the title comes before them.
    before = text[: first_block.start()]
    assert before.strip().startswith("# ") and before.count("\n") <= 3
    assert first_block.group(2).strip().splitlines() == SETUP


def test_ci_runs_the_readme_test_command() -> None:
    ci = (ROOT / ".ci" / "run").read_text("utf-8")
    commands = [ln.strip() for ln in ci.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    assert any('".[test]"' in c and "pip install" in c for c in commands)
    assert commands[-1] == "pytest"


def test_readme_python_runs(tmp_path: Path) -> None:
    # Every Python block of the README, in order, in a fresh interpreter and an empty folder (the
    # online learner creates its registry there).
    code = "\n".join(fenced(README.read_text("utf-8"), "python"))
    assert "itp.TaskPartitioner()" in code and "p.report_outcome(" in code
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300,
        env={**os.environ}, check=False,
    )
    assert out.returncode == 0, out.stderr
    assert "Traceback" not in out.stderr


@pytest.mark.parametrize("path", [README, *DOCS], ids=lambda p: p.name)
def test_no_placeholders(path: Path) -> None:
    text = path.read_text("utf-8").lower()
    for marker in ("todo", "tbd", "coming soon", "fixme", "xxx"):
        assert not re.search(rf"\b{marker}\b", text), f"{path.name} contains {marker!r}"


LINKED = [README, *DOCS, ROOT / "itp" / "sim" / "data" / "README.md"]


@pytest.mark.parametrize("path", LINKED, ids=lambda p: p.name)
def test_relative_links_resolve(path: Path) -> None:
    text = path.read_text("utf-8")
    for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text):
        if "://" in target or target.startswith("mailto:"):
            continue
        assert (path.parent / target).exists(), f"{path.name} links to missing {target}"


def test_docs_index_links_every_page() -> None:
    index = (ROOT / "docs" / "index.md").read_text("utf-8")
    for page in DOCS:
        if page.name != "index.md":
            assert f"({page.name})" in index, page.name
    readme = README.read_text("utf-8")
    assert "(docs/index.md)" in readme and "(docs/architecture.md)" in readme
