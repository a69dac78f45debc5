"""The README and docs/ stay true: the generated config reference matches the code, links
resolve, `python -m` commands name modules that exist, and the README stays short."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
README = REPO / "README.md"
PAGES = [README, *sorted(DOCS.glob("*.md"))]

LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
PYTHON_M = re.compile(r"python3? -m ([A-Za-z_][\w.]*)")


def test_configuration_reference_is_generated_from_the_config_classes():
    from emotion_edge.tools.config_reference import COMMAND, render

    page = DOCS / "configuration.md"
    assert page.is_file(), f"docs/configuration.md is missing: run `{COMMAND}`"
    assert page.read_text(encoding="utf-8") == render(), (
        f"docs/configuration.md is out of date with emotion_edge.config: run `{COMMAND}`"
    )


def test_configuration_reference_lists_every_table_and_key():
    import dataclasses

    from emotion_edge.config import TABLES
    from emotion_edge.tools.config_reference import render

    text = render()
    for name, cls in TABLES.items():
        assert f"### `[{name}]`" in text
        for f in dataclasses.fields(cls):
            assert f"| `{f.name}` |" in text, f"{name}.{f.name} missing from the reference"


def test_config_reference_main_prints_the_page(capsys):
    from emotion_edge.tools.config_reference import main, render

    assert main() == 0
    assert capsys.readouterr().out == render()


def test_readme_is_short_and_keeps_its_generated_blocks_and_screenshot():
    text = README.read_text(encoding="utf-8")
    lines = text.count("\n")
    assert lines <= 250, f"README.md has {lines} lines; move details to docs/"
    assert "<!-- benchmarks:key-rows -->" in text and "<!-- /benchmarks:key-rows -->" in text
    # the live view's screenshot, written by tests/test_web.py from the sample video
    assert "](docs/img/live-view.png)" in text
    png = README.parent / "docs" / "img" / "live-view.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_docs_index_links_every_page():
    index = (DOCS / "README.md").read_text(encoding="utf-8")
    for page in DOCS.glob("*.md"):
        if page.name != "README.md":
            assert f"]({page.name})" in index, f"docs/README.md does not link {page.name}"


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.S)
    return {_slug(m) for m in re.findall(r"^#+ (.+)$", text, flags=re.M)}


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_relative_links_resolve(page):
    text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.S)
    broken = []
    for target in LINK.findall(text):
        if re.match(r"[a-z]+:", target):  # http:, https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            broken.append(target)
        elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
            broken.append(target)
    assert not broken, f"{page.relative_to(REPO)}: broken links {broken}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_python_m_commands_name_existing_modules(page, monkeypatch):
    monkeypatch.syspath_prepend(str(REPO))  # benchmarks.* runs from the repository root
    missing = []
    for module in sorted(set(PYTHON_M.findall(page.read_text(encoding="utf-8")))):
        try:
            found = importlib.util.find_spec(module) is not None
        except ModuleNotFoundError:
            found = False
        if not found:
            missing.append(module)
    assert not missing, f"{page.relative_to(REPO)}: `python -m` of missing modules {missing}"
