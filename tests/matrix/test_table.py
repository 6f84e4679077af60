"""docs/compatibility.md is what this run of the matrix measured: the page
compat_table.py makes from the rows' results, never edited by hand."""

import difflib
import os
import unittest

import compat_table
import matrix


class TableIsCurrent(unittest.TestCase):

    def test_page_matches_the_results(self):
        ran = set(os.environ.get("FORKSAFE_MATRIX_ROWS", "").split(","))
        if ran != {r.name for r in matrix.ROWS}:
            self.skipTest("only rows %s ran: the table needs every row" % sorted(ran))
        docs = compat_table.load()
        missing = [row for row in compat_table.ROW_ORDER if row not in docs]
        self.assertEqual(missing, [], "rows without results (see their suites above)")
        with open(compat_table.PAGE) as f:
            committed = f.read()
        measured = compat_table.render(docs)
        diff = "".join(difflib.unified_diff(committed.splitlines(True), measured.splitlines(True),
                                            "docs/compatibility.md", "measured"))
        self.assertEqual(committed, measured,
                         "docs/compatibility.md is not what the matrix measured; "
                         "if the change is right, run `make compat-table`:\n" + diff)


if __name__ == "__main__":
    unittest.main()
