"""generation-ready's bookkeeping for the gunicorn and Celery adapters
(forksafe._generation): the shared page a child marks, and when the main
process calls a generation complete."""
import os
import unittest

from forksafe._generation import Generation
from forksafe._generation import ReadyBoard
from forksafe._generation import exited


class TestReadyBoard(unittest.TestCase):
    def test_a_child_marks_the_parents_page(self):
        board = ReadyBoard(8)
        pid = os.fork()
        if pid == 0:
            board.mark(3, os.getpid())
            os._exit(0)
        os.waitpid(pid, 0)
        self.assertIsNotNone(board.ready_at(3, pid))
        self.assertIsNone(board.ready_at(3, pid + 1))  # another process of that slot
        self.assertIsNone(board.ready_at(2, pid))
        self.assertIsNone(board.ready_at(99, pid))  # beyond the page: never ready

    def test_exited_sees_a_zombie_without_reaping_it(self):
        pid = os.fork()
        if pid == 0:
            os._exit(3)
        while not exited(pid):
            pass
        self.assertTrue(exited(pid))
        _, status = os.waitpid(pid, 0)  # still ours to reap
        self.assertEqual(os.WEXITSTATUS(status), 3)
        self.assertTrue(exited(pid))


class TestGeneration(unittest.TestCase):
    def setUp(self):
        self.board = ReadyBoard(8)
        self.gen = Generation()

    def test_nothing_before_master_start(self):
        self.board.mark(1, 101)
        self.assertIsNone(self.gen.complete(self.board, [(1, 101)], 1))

    def test_once_every_member_is_ready_and_enough_of_them(self):
        self.gen.master_started()
        self.board.mark(1, 101)
        self.assertIsNone(self.gen.complete(self.board, [(1, 101), (2, 102)], 2))
        self.board.mark(2, 102)
        self.assertIsNone(self.gen.complete(self.board, [(1, 101), (2, 102)], 3))
        workers, elapsed_ms = self.gen.complete(self.board, [(2, 102), (1, 101)], 2)
        self.assertEqual([(w["id"], w["pid"]) for w in workers], [(1, 101), (2, 102)])
        for w in workers:
            self.assertTrue(0 <= w["ms"] <= elapsed_ms)
        # once per generation
        self.assertIsNone(self.gen.complete(self.board, [(1, 101), (2, 102)], 2))

    def test_replacing_every_worker_waits_for_new_marks(self):
        self.gen.master_started()
        self.board.mark(1, 101)
        self.assertIsNotNone(self.gen.complete(self.board, [(1, 101)], 1))
        self.gen.replacing_every_worker()
        # ready before the new generation began: not one of it
        self.assertIsNone(self.gen.complete(self.board, [(1, 101)], 1))
        self.board.mark(1, 201)
        workers, _ = self.gen.complete(self.board, [(1, 201)], 1)
        self.assertEqual(workers[0]["pid"], 201)


if __name__ == "__main__":
    unittest.main()
