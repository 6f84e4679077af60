"""Sends forksafe_sqla.where to the Celery worker a few times and says which
pool process answered on which database backend (`make run-celery` runs it
once the worker is started).  python3 -m forksafe_sqla.ask [COUNT]"""
import sys

from .tasks import app


def main(count=8):
    results = [app.send_task("forksafe_sqla.where") for _ in range(count)]
    for result in results:
        answer = result.get(timeout=120)
        # dropped by recipe:sqlalchemy, or by the app's own dispose_engine
        inherited_from = answer.get("pool_dropped_from") or (
            answer["disposed"][0]["from_pid"] if answer["disposed"] else None)
        print("[forksafe_sqla] task answered by pool process %d on database backend %s (%s)%s"
              % (answer["pid"], answer["backend_pid"], answer["url"],
                 "; it disposed the pool inherited from pid %s" % inherited_from
                 if inherited_from else ""), flush=True)
    print("[forksafe_sqla] the worker keeps running: Ctrl-C stops it", flush=True)


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:2]))
