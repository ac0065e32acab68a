"""The documentation stays an entry point: a short README, links that resolve, no measurement log in its prose."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README_MAX_BYTES = 16 * 1024
LINK = re.compile(r"\]\(([^)\s]+)\)")


def documents() -> list[Path]:
    return [
        ROOT / "README.md",
        ROOT / "ARCHITECTURE.md",
        *sorted((ROOT / "docs").glob("*.md")),
        ROOT / "docs" / "removal" / "README.md",
    ]


def anchors(path: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    out = set()
    for line in path.read_text().splitlines():
        if line.startswith("#"):
            out.add(re.sub(r"[^\w\- ]", "", line.lstrip("#").strip().lower()).replace(" ", "-"))
    return out


def broken_links(path: Path) -> list[str]:
    """Relative links of ``path`` whose file (or heading anchor in a Markdown file) does not exist."""
    broken = []
    for link in LINK.findall(path.read_text()):
        if re.match(r"[a-z]+:", link):
            continue
        target, _, anchor = link.partition("#")
        file = (path.parent / target).resolve() if target else path
        if not file.exists() or (anchor and file.suffix == ".md" and anchor not in anchors(file)):
            broken.append(link)
    return broken


def test_readme_is_short():
    assert (ROOT / "README.md").stat().st_size <= README_MAX_BYTES


@pytest.mark.parametrize("path", documents(), ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(path):
    assert broken_links(path) == []


def test_broken_links_are_found(tmp_path):
    text = "# Top\n\n[ok](a.md#top) [gone](b.md) [bad anchor](a.md#nowhere) [web](https://x.org)\n"
    (tmp_path / "a.md").write_text(text)
    assert broken_links(tmp_path / "a.md") == ["b.md", "a.md#nowhere"]


@pytest.mark.parametrize("path", [ROOT / "README.md", ROOT / "ARCHITECTURE.md"], ids=["README", "ARCHITECTURE"])
def test_entry_points_carry_no_measurement_log(path):
    """No "today", session talk or load averages: numbers live in result files and the documents beside them."""
    text = path.read_text().lower()
    assert not re.search(r"\btoday\b|earlier session|load average|\bload \d", text)
