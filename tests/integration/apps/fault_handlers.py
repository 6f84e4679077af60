"""python: handlers that misbehave, for the fault matrix (test_faults.py)."""
import os
import threading
import time


def boom(payload):
    raise RuntimeError("boom on %s" % payload["event"])


def _note(payload, name, pid):
    with open(os.path.join(payload["settings"]["fault.dir"], name), "a") as f:
        f.write("%d\n" % pid)


def slow(payload):
    """Notes its pid in slow.pids, then blocks its process for
    settings['fault.sleep'] seconds."""
    _note(payload, "slow.pids", os.getpid())
    time.sleep(float(payload["settings"].get("fault.sleep", "30")))


def slow_boom(payload):
    slow(payload)
    raise RuntimeError("slow boom on %s" % payload["event"])


def _setting_path(payload, key):
    """The file settings[KEY] names, in settings['fault.dir']."""
    settings = payload["settings"]
    return os.path.join(settings["fault.dir"], settings[key])


def boom_once_marked(payload):
    """Raises at once when the file settings['fault.marker'] names exists;
    otherwise (checked first) it is slow_boom.  A test creates the marker
    once this handler's first run has noted its pid: that run blocks, every
    later one fails."""
    if os.path.exists(_setting_path(payload, "fault.marker")):
        raise RuntimeError("boom on %s" % payload["event"])
    slow_boom(payload)


def leave_child(payload):
    """Forks a child that outlives the handler, never waited for."""
    pid = os.fork()
    if pid == 0:
        time.sleep(float(payload["settings"].get("fault.child_sleep", "0.2")))
        os._exit(0)
    _note(payload, "child.pids", pid)


def double_fork(payload):
    """The classic daemon: the intermediate child is reaped, the grandchild
    is orphaned at once."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        grandchild = os.fork()
        if grandchild == 0:
            os.close(w)
            time.sleep(float(payload["settings"].get("fault.child_sleep", "0.2")))
            os._exit(0)
        os.write(w, b"%d" % grandchild)
        os._exit(0)
    os.close(w)
    grandchild = int(os.read(r, 32))
    os.close(r)
    os.waitpid(pid, 0)
    _note(payload, "grandchild.pids", grandchild)


def _until_released(payload):
    """Until the file settings['fault.release'] names exists (bounded at
    10 minutes), or 0.2 s without that setting."""
    if "fault.release" not in payload["settings"]:
        time.sleep(0.2)
        return
    release = _setting_path(payload, "fault.release")
    deadline = time.monotonic() + 600
    while not os.path.exists(release) and time.monotonic() < deadline:
        time.sleep(0.05)


def start_threads(payload):
    """A daemon thread that never ends and a plain one that ends soon: at
    once when released (settings['fault.release']), else after 0.2 s."""
    threading.Thread(target=time.sleep, args=(3600,), daemon=True).start()
    threading.Thread(target=_until_released, args=(payload,)).start()

