"""The documentation holds together: every relative link in the project's
Markdown files (README.md, docs/, the examples' and the package's READMEs)
points to a file that exists, and every #anchor to a heading there (as
GitHub makes anchors); README.md stays a landing page."""

import os
import re
import subprocess
import unittest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
README_MAX_LINES = 250
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)|!\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^(```|~~~)")


def markdown_files():
    tracked = subprocess.run(["git", "ls-files", "*.md"], cwd=ROOT, capture_output=True,
                             text=True, check=True).stdout.split()
    # New files not yet committed count too (a link checked before commit).
    untracked = subprocess.run(["git", "ls-files", "--others", "--exclude-standard", "*.md"],
                               cwd=ROOT, capture_output=True, text=True,
                               check=True).stdout.split()
    return sorted(set(tracked + untracked))


def prose_lines(path):
    """(line number, text) outside fenced code blocks."""
    inside = False
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if FENCE.match(line.strip()):
                inside = not inside
                continue
            if not inside:
                yield number, line


def slug(heading):
    """GitHub's anchor for a heading: lowercase, inline code and links
    reduced to their text, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip())
    text = text.replace("`", "").lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path):
    seen, out = {}, set()
    for _, line in prose_lines(path):
        m = re.match(r"^(#{1,6})\s+(.*?)\s*#*\s*$", line)
        if not m:
            continue
        base = slug(m.group(2))
        count = seen.get(base, 0)
        seen[base] = count + 1
        out.add(base if count == 0 else "%s-%d" % (base, count))
    return out


class DocsTest(unittest.TestCase):

    def test_every_relative_link_resolves(self):
        broken = []
        checked = 0
        for name in markdown_files():
            path = os.path.join(ROOT, name)
            for number, line in prose_lines(path):
                line = re.sub(r"`[^`]*`", "", line)  # code spans hold no links
                for m in LINK.finditer(line):
                    target = m.group(1) or m.group(2)
                    if re.match(r"^[a-z][a-z0-9+.-]*:", target):
                        continue  # http:, https:, mailto:
                    checked += 1
                    file_part, _, anchor = target.partition("#")
                    resolved = (os.path.normpath(os.path.join(os.path.dirname(path), file_part))
                                if file_part else path)
                    where = "%s:%d: %s" % (name, number, target)
                    if not os.path.exists(resolved):
                        broken.append(where + " (no such file)")
                    elif anchor and resolved.endswith(".md") and anchor not in anchors(resolved):
                        broken.append(where + " (no such heading)")
        self.assertGreater(checked, 10, "the checker found almost no links: is it reading?")
        self.assertEqual(broken, [], "broken links:\n" + "\n".join(broken))

    def test_readme_is_a_landing_page(self):
        with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
            lines = f.read().splitlines()
        self.assertLessEqual(len(lines), README_MAX_LINES)
        text = "\n".join(lines)
        for command in ("make run", "make check"):
            self.assertIn(command, text)

    def test_every_docs_page_is_linked_from_the_readme(self):
        with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
            readme = f.read()
        pages = sorted(n for n in os.listdir(os.path.join(ROOT, "docs")) if n.endswith(".md"))
        self.assertTrue(pages)
        for page in pages:
            self.assertIn("(docs/%s" % page, readme, "README.md does not link docs/%s" % page)

    def test_the_checker_catches_a_broken_link_and_anchor(self):
        self.assertEqual(slug("Errors and policy"), "errors-and-policy")
        self.assertEqual(slug("Pyramid: `pyramid_forksafe`"), "pyramid-pyramid_forksafe")
        self.assertEqual(slug("Swap the server: gunicorn and Celery"),
                         "swap-the-server-gunicorn-and-celery")
        self.assertNotIn("no-such-heading", anchors(os.path.join(ROOT, "README.md")))


if __name__ == "__main__":
    unittest.main()
