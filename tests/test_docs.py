"""The README is a front door (at most 10 KB) and the manual in docs/ holds together: every relative
link in README.md and docs/*.md reaches a file (and its anchor), and the README states the test
command that CI (.ci/run) runs. The headline block itself is checked in tests/test_verdicts.py."""

import importlib.util
import re
from pathlib import Path

from tests.helpers import ROOT

README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]
README_MAX_BYTES = 10_240

LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(([^)\s]+)\)")  # [text](target), ![alt](target)
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
EXPLICIT_ANCHOR = re.compile(r"<a\s+(?:id|name)=\"([^\"]+)\"")


def prose_lines(text: str) -> list[str]:
    """The lines outside fenced code blocks (a link or a heading inside a fence is code)."""
    out, fenced = [], False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        if not fenced:
            out.append(line)
    return out


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    lines = prose_lines(page.read_text())
    found, seen = set(), {}
    for line in lines:
        if m := HEADING.match(line):
            base = slug(m.group(2))
            n = seen.get(base, 0)
            seen[base] = n + 1
            found.add(base if n == 0 else f"{base}-{n}")
        found.update(EXPLICIT_ANCHOR.findall(line))
    return found


def relative_links(page: Path) -> list[str]:
    return [t for line in prose_lines(page.read_text()) for t in LINK.findall(line)
            if not re.match(r"^[a-z][a-z0-9+.-]*:", t)]  # http:, https:, mailto: are not files


def broken_links(page: Path, root: Path = ROOT) -> list[str]:
    broken, name = [], page.relative_to(root)
    for target in relative_links(page):
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            broken.append(f"{name}: {target} (no such file)")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"{name}: {target} (no such anchor in {dest.name})")
    return broken


def test_readme_is_a_front_door():
    size = len(README.read_bytes())
    assert size <= README_MAX_BYTES, f"README.md is {size} bytes; move detail to docs/ (limit {README_MAX_BYTES})"


def test_every_relative_link_in_readme_and_docs_resolves():
    assert len(PAGES) > 5 and sum(len(relative_links(p)) for p in PAGES) > 30  # the pages were read
    assert [b for p in PAGES for b in broken_links(p)] == []


def test_link_checker_catches_a_missing_file_and_a_missing_anchor(tmp_path):
    (tmp_path / "b.md").write_text("# Some Title: `x`\n\n<a id=\"kept\"></a>\n"
                                   "```\n# not a heading\n[code](nowhere.md)\n```\n")
    page = tmp_path / "a.md"
    page.write_text("[ok](b.md#some-title-x) [ok](b.md#kept) [bad](c.md) [bad](b.md#not-a-heading) "
                    "![img](b.md) [web](https://example.org/x) [self](#top) [bad](#nope)\n\n# Top\n")
    assert broken_links(page, tmp_path) == ["a.md: c.md (no such file)",
                                            "a.md: b.md#not-a-heading (no such anchor in b.md)",
                                            "a.md: #nope (no such anchor in a.md)"]
    assert broken_links(tmp_path / "b.md", tmp_path) == []  # a link inside a code fence is code


def test_readme_states_the_ci_test_command():
    """.ci/run runs exactly the README's test command; the README must show it in a code block."""
    ci = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()
          if line.strip() and not line.lstrip().startswith(("#", "set ", "cd ", "export "))]
    assert ci == ["./run_all.sh test"]
    text, fenced, code = README.read_text(), False, []
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
        elif fenced:
            code.append(line.split("#", 1)[0].strip())
    assert ci[0] in code


def test_readme_commands_name_modules_that_exist():
    modules = set(re.findall(r"python3? -m (bench(?:\.\w+)*)", README.read_text()))
    assert {"bench.run", "bench.report"} <= modules
    assert [m for m in sorted(modules) if importlib.util.find_spec(m) is None] == []
