"""forksafe.host.Host.python_bridge: the `_forksafe` module of the C core
(lib/python_bridge.c, as the uWSGI plugin makes it) in this interpreter,
its listeners run by the host's dispatch, over build/libforksafe.so."""
import sys
import types

from forksafe_support import ModulesTestCase

from forksafe import host as fs_host

CAPTURE = "_fs_bridge_capture"


class TestPythonBridge(ModulesTestCase):
    def setUp(self):
        super().setUp()
        self.handled = []
        module = types.ModuleType(CAPTURE)
        module.record = self.handled.append
        sys.modules[CAPTURE] = module
        self.addCleanup(sys.modules.pop, CAPTURE, None)

    def host(self, container="gunicorn", subscriptions=(), **kwargs):
        host = fs_host.Host(container, None, list(subscriptions), **kwargs)
        self.addCleanup(host.close)
        return host

    def test_the_module_is_the_cores(self):
        host = self.host("celery")
        runtime = host.python_bridge()
        self.assertIs(sys.modules["_forksafe"], runtime)
        self.assertEqual(runtime.container, "celery")
        self.assertEqual(runtime.version, fs_host_version())
        self.assertEqual(runtime.listeners, [])
        self.assertEqual(runtime.delivered, {})
        self.assertTrue(callable(runtime.recorded))
        # a second call keeps the module
        self.assertIs(host.python_bridge(), runtime)

    def test_listeners_get_the_payload_python_handlers_get(self):
        host = self.host(subscriptions=["* python:%s:record" % CAPTURE])
        runtime = host.python_bridge()
        heard = []
        runtime.listeners.append(heard.append)
        child = {"kind": "worker", "id": 2, "pid": 4242, "respawn": 1, "status": 9,
                 "cause": "signal"}
        self.assertEqual(host.dispatch("child-death", "master", 0, child=child), fs_host.OK)
        self.assertEqual(host.dispatch("post-fork", "worker", 2, respawn=1, generation=3),
                         fs_host.OK)
        self.assertEqual([p["event"] for p in heard], ["child-death", "post-fork"])
        for mine, core in zip(heard, self.handled):
            mine, core = dict(mine), dict(core)
            self.assertAlmostEqual(mine.pop("time"), core.pop("time"), delta=5)
            self.assertEqual(mine, core)
        self.assertEqual(heard[0]["container"], "gunicorn")
        # post-fork starts the record afresh
        self.assertEqual(list(runtime.delivered), ["post-fork"])
        self.assertIs(runtime.delivered["post-fork"], heard[1])

    def test_a_listener_that_raises_is_a_failure_under_the_policy(self):
        for policy, code in (("log", fs_host.LOG), ("exit", fs_host.EXIT),
                             ("fatal", fs_host.FATAL)):
            with self.subTest(policy=policy):
                sys.modules.pop("_forksafe", None)
                host = self.host(on_error=policy)
                runtime = host.python_bridge()
                heard = []

                def boom(payload):
                    raise RuntimeError("failing on purpose")

                runtime.listeners[:] = [boom, heard.append]
                self.assertEqual(host.dispatch("worker-ready", "worker", 1), code)
                self.assertEqual([p["event"] for p in heard], ["worker-ready"])
                stats = host.stats()
                self.assertEqual(stats["events"]["worker-ready"]["handlers"], 2)
                self.assertEqual(stats["events"]["worker-ready"]["failed"], 1)
                self.assertEqual({h["handler"] for h in stats["history"]},
                                 {"pyramid_forksafe"})
                # The listeners' row of the per-subscription counters.
                lines = host.metrics().splitlines()
                self.assertIn('forksafe_subscription_runs_total{index="-1",'
                              'handler="pyramid_forksafe"} 2', lines)
                self.assertIn('forksafe_subscription_failures_total{index="-1",'
                              'handler="pyramid_forksafe"} 1', lines)

    def test_an_unheard_post_fork_is_kept_until_asked(self):
        host = self.host()
        runtime = host.python_bridge()
        host.dispatch("post-fork", "worker", 1)
        self.assertEqual(runtime.delivered, {})
        payload = runtime.recorded("post-fork")
        self.assertEqual((payload["event"], payload["process"]["id"]), ("post-fork", 1))
        self.assertIsNone(runtime.recorded("worker-ready"))

    def test_a_closed_host_leaves_nothing_behind(self):
        host = self.host()
        runtime = host.python_bridge()
        host.dispatch("post-fork", "worker", 1)
        host.close()
        # the kept post-fork was the closed host's: forgotten, not read
        self.assertIsNone(runtime.recorded("post-fork"))
        with self.assertRaises(fs_host.ForksafeError):
            host.python_bridge()

    def test_hosts_without_the_bridge_run_no_listener(self):
        bridged = self.host()
        runtime = bridged.python_bridge()
        heard = []
        runtime.listeners.append(heard.append)
        plain = self.host()
        self.assertEqual(plain.dispatch("post-fork", "worker", 1), fs_host.OK)
        self.assertEqual(heard, [])
        self.assertEqual(plain.stats()["history"], [])


def fs_host_version():
    import forksafe

    return forksafe.__version__
