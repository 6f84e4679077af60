"""The shape of the tree, kept true: no call circle between C files, every
source file opens with the one concern it holds, and none outgrows a room.

The call graph comes from the built objects (`nm`): a file "calls" another
when it uses a function the other defines.  Data (the glue's one state
struct) is shared, not called, and does not count.
"""
import glob
import os
import subprocess
import unittest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD = os.path.join(ROOT, "build")
# A room, not a hall: a file over this many lines holds more than one concern.
MAX_LINES = 620


def tracked(*patterns):
    out = subprocess.run(["git", "-C", ROOT, "ls-files", "-z", "--", *patterns],
                         capture_output=True, text=True, check=True).stdout
    return sorted(path for path in out.split("\0") if path)


def sources():
    """Every C and Python source outside tests/ (benchmarks and examples included)."""
    return [path for path in tracked("*.c", "*.h", "*.py")
            if not path.startswith(("tests/", "python/tests/", "debian/"))]


def call_graph(objects):
    """{object: set of objects whose functions it calls}, from nm."""
    defined, used = {}, {}
    for obj in objects:
        out = subprocess.run(["nm", obj], capture_output=True, text=True, check=True).stdout
        used[obj] = set()
        for line in out.splitlines():
            parts = line.split()
            if len(parts) == 3 and parts[1] == "T":
                defined[parts[2]] = obj
            elif len(parts) == 2 and parts[0] == "U":
                used[obj].add(parts[1])
    return {obj: {defined[s] for s in symbols if s in defined and defined[s] != obj}
            for obj, symbols in used.items()}


def find_circle(graph):
    """One circle as a list of nodes (first == last), or None."""
    state = {}

    def visit(node, path):
        state[node] = "open"
        for callee in sorted(graph.get(node, ())):
            if state.get(callee) == "open":
                return path[path.index(callee):] + [callee]
            if callee not in state:
                circle = visit(callee, path + [callee])
                if circle:
                    return circle
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state:
            circle = visit(node, [node])
            if circle:
                return circle
    return None


class CallGraph(unittest.TestCase):
    def objects(self, folder):
        found = sorted(glob.glob(os.path.join(BUILD, folder, "*.o")))
        names = {os.path.basename(path)[:-2] for path in found}
        sources_there = {os.path.basename(path)[:-2]
                         for path in tracked(folder.split("/", 1)[-1] + "/*.c")}
        missing = sources_there - names
        if missing:
            self.fail("not built: %s (run make first)" % ", ".join(sorted(missing)))
        return [path for path in found if os.path.basename(path)[:-2] in sources_there]

    def assert_no_circle(self, objects):
        graph = call_graph(objects)
        circle = find_circle(graph)
        if circle:
            self.fail("files call back into a caller: " +
                      " -> ".join(os.path.relpath(path, BUILD) for path in circle))

    def test_no_circle_in_the_core(self):
        self.assert_no_circle(self.objects("lib"))

    def test_no_circle_in_the_uwsgi_glue(self):
        self.assert_no_circle(self.objects("plugin/uwsgi") + self.objects("lib"))

    def test_the_checker_finds_a_circle(self):
        self.assertEqual(find_circle({"a": {"b"}, "b": {"c"}, "c": {"a"}}),
                         ["a", "b", "c", "a"])
        self.assertIsNone(find_circle({"a": {"b", "c"}, "b": {"c"}, "c": set()}))


class Rooms(unittest.TestCase):
    def test_every_source_opens_with_its_concern(self):
        bare = []
        for path in sources():
            with open(os.path.join(ROOT, path), encoding="utf-8") as f:
                head = f.read(400).lstrip()
            if path.endswith(".py"):
                if head.startswith("#!"):
                    head = head.split("\n", 1)[1].lstrip() if "\n" in head else ""
                # a docstring, or a comment block (files uWSGI or gunicorn exec)
                opens = head.startswith(('"""', "'''", "#"))
            else:
                opens = head.startswith("/*")
            if not opens:
                bare.append(path)
        self.assertEqual(bare, [], "files without an opening comment")

    def test_no_source_outgrows_a_room(self):
        large = []
        for path in sources():
            with open(os.path.join(ROOT, path), encoding="utf-8") as f:
                count = sum(1 for _ in f)
            if count > MAX_LINES:
                large.append("%s (%d lines)" % (path, count))
        self.assertEqual(large, [], "more than %d lines" % MAX_LINES)


if __name__ == "__main__":
    unittest.main()
