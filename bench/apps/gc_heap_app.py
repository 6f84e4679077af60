"""The gc-freeze benchmark's app (bench/gc_freeze.py): a large object graph
built at import, in the master, and requests that make the worker's garbage
collector run full collections on its own, as an app with caches does.

At import: $FORKSAFE_BENCH_GC_RECORDS customer records (default 80,000),
each a dict holding strings, two lists, a nested dict, a list of two order
lists and a class instance -- about 7 tracked containers and 1.9 KiB per
record: 80,000 records are ~570,000 objects the collector tracks and
~150 MiB, kept in a list and in a dict by name.

Per request (GET /), nothing calls gc.collect(); the collector is driven
only by what the request allocates:

- a tree of 1,000 nodes with links to their parent (cyclic garbage, ~2,000
  containers that only the collector frees, like an ORM session's identity
  map and its back references): it fills generation 0, a few young
  collections per request;
- 400 entries (a dict holding a list and a small dict, under a tuple key)
  kept in an LRU cache of 4,000 entries, so each entry outlives two young
  collections and is promoted to the oldest generation before it is
  evicted.  CPython (3.11) runs a full collection after 11 collections of
  generation 1 once more than a quarter of what survived the last full one
  has been promoted since: 3 in a worker's 250 requests without gc.freeze()
  (the quarter is ~140,000 objects), 5 with it (after the first, the
  quarter is of the worker's own objects only: frozen ones do not count);
- one read of a record of the master's graph (what the app serves).

The answer is JSON: the worker's pid, requests served, and the full
(generation 2) collections this process ran since the fork, counted by a
gc callback, and, as a check, the same counted by gc.get_stats() since the
worker's first request.
"""
import collections
import gc
import json
import os
import sys
import time

RECORDS = int(os.environ.get("FORKSAFE_BENCH_GC_RECORDS", "80000"))
TREE_NODES = 1000
CACHE_ADD = 400
CACHE_SIZE = 4000

MASTER_PID = os.getpid()


class Profile(object):
    def __init__(self, i):
        self.id = i
        self.score = i * 0.5
        self.flags = [i % 2 == 0, i % 3 == 0]
        self.prefs = {"lang": "en", "theme": "dark" if i % 2 else "light"}


_started = time.monotonic()
CITIES = ["city-%d" % c for c in range(500)]
DATA = []
BY_NAME = {}
for _i in range(RECORDS):
    _r = {"id": _i, "name": "customer-%07d" % _i, "email": "customer%d@example.org" % _i,
          "tags": ["tag%d" % (_i % 13), "tier%d" % (_i % 3)],
          "address": {"street": "%d Main Street" % _i, "city": CITIES[_i % 500],
                      "zip": "%05d" % (_i % 100000)},
          "orders": [[_i, j, "sku-%d" % (_i * 7 + j)] for j in range(2)],
          "profile": Profile(_i)}
    DATA.append(_r)
    BY_NAME[_r["name"]] = _r
del _i, _r
sys.stderr.write("[gc_heap_app] pid %d built %d records in %.1f s: %d objects tracked by the "
                 "collector\n" % (MASTER_PID, RECORDS, time.monotonic() - _started,
                                  len(gc.get_objects())))
sys.stderr.flush()

# Full collections in this process since the fork (the master's are not
# counted: the callback counts only where the pid is not the master's).
_full = {"count": 0, "seconds": 0.0, "max": 0.0, "started": 0.0}


def _on_gc(phase, info):
    if info["generation"] != 2 or os.getpid() == MASTER_PID:
        return
    if phase == "start":
        _full["started"] = time.perf_counter()
    else:
        took = time.perf_counter() - _full["started"]
        _full["count"] += 1
        _full["seconds"] += took
        _full["max"] = max(_full["max"], took)


gc.callbacks.append(_on_gc)

_worker = {"pid": None, "served": 0, "stats_full_at_first": 0}
_cache = collections.OrderedDict()


def _work(n):
    root = {"children": []}
    for j in range(TREE_NODES):
        root["children"].append({"parent": root, "path": [n, j]})
    for j in range(CACHE_ADD):
        _cache[(n, j)] = {"request": n, "rows": [j, j + 1], "meta": {"j": j}}
    while len(_cache) > CACHE_SIZE:
        _cache.popitem(last=False)
    return DATA[(n * 7919) % len(DATA)]["name"]


def application(environ, start_response):
    if _worker["pid"] != os.getpid():
        _worker.update(pid=os.getpid(), served=0,
                       stats_full_at_first=gc.get_stats()[2]["collections"])
    _worker["served"] += 1
    name = _work(_worker["served"])
    body = json.dumps({
        "pid": os.getpid(), "served": _worker["served"], "record": name,
        "full_collections": _full["count"],
        "full_collections_stats": gc.get_stats()[2]["collections"] - _worker["stats_full_at_first"],
        "full_ms_total": _full["seconds"] * 1e3, "full_ms_max": _full["max"] * 1e3,
        "gc_count": gc.get_count(),
        # not gc.get_freeze_count(): it walks the frozen objects' list,
        # ~50 ms with this heap, on every request
    }).encode()
    start_response("200 OK", [("Content-Type", "application/json"),
                              ("Content-Length", str(len(body)))])
    return [body]
