#!/bin/sh
# make run-celery: the example under a Celery worker.  A private redis-server
# broker on 127.0.0.1:6390 (no persistence, its log in var/), the worker with
# 4 prefork pool processes against production.ini (FORKSAFE_SETTINGS), and
# once, a client asking it 8 tasks (forksafe_sqla/ask.py).  Ctrl-C stops
# them all.
set -eu
cd "$(dirname "$0")"
PYTHON=${PYTHON:-/usr/bin/python3}
BROKER_PORT=6390
"$PYTHON" port_free.py "127.0.0.1:$BROKER_PORT" "run-celery.sh (BROKER_PORT)"
mkdir -p var
rm -f var/events.jsonl
# In a session of its own: Ctrl-C reaches the worker, whose warm shutdown
# still talks to the broker; the trap below stops the broker after it.
setsid redis-server --bind 127.0.0.1 --port "$BROKER_PORT" --save '' --appendonly no --dir var \
    >var/redis.log 2>&1 &
redis=$!
worker=
# The worker and the broker end with this script, however it ends: the
# worker first, then the broker.
trap 'kill $worker 2>/dev/null || :; wait $worker 2>/dev/null || :; kill $redis 2>/dev/null || :; wait' EXIT
trap 'exit 130' INT TERM
export FORKSAFE_SQLA_BROKER="redis://127.0.0.1:$BROKER_PORT/0"
FORKSAFE_SETTINGS=production.ini "$PYTHON" -m celery -A forksafe_sqla.tasks worker \
    --pool=prefork --concurrency=4 --loglevel=INFO \
    --without-heartbeat --without-mingle --without-gossip &
worker=$!
"$PYTHON" -m forksafe_sqla.ask 8
wait "$worker"
