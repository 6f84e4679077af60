#!/usr/bin/env bash
# Installs what building and testing forksafe needs, from Debian only.
# Idempotent and quick when everything is already there.
set -eu
packages=(
    build-essential pkg-config libjansson-dev check
    python3-dev python3-distutils # make embedded: uWSGI's python plugin, compiled in
    uwsgi-core uwsgi-plugin-python3 uwsgi-dev
    gunicorn
    python3-pastedeploy python3-pyramid python3-uwsgidecorators
    valgrind clang-format
    strace wrk # make bench: bench/no_parse_per_fork.py, bench/throughput.py
    clang libclang-rt-14-dev # make fuzz: libFuzzer and its sanitizer runtimes
    python3-sqlalchemy python3-psycopg2 postgresql python3-prometheus-client
    python3-celery redis-server python3-redis
    debhelper dh-python python3-all python3-setuptools pybuild-plugin-pyproject lintian
    debootstrap # make check-matrix: Debian 13 and sid roots (tests/matrix)
    prometheus # promtool, and the server tests/integration/prom.py starts on loopback
)
missing=()
for package in "${packages[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q 'install ok installed'; then
        missing+=("$package")
    fi
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "deps: installing ${missing[*]}"
    if [ "$(id -u)" -ne 0 ]; then
        echo "deps: missing packages and not root; run: sudo apt-get install ${missing[*]}" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    # Packages that ship a service (prometheus, redis-server, postgresql)
    # must not start it: the tests start their own servers on free ports.
    # A policy-rc.d that says no (101) holds every start back during the
    # install, unless the machine already has one of its own.
    policy=/usr/sbin/policy-rc.d
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\n# scripts/deps.sh: no service starts while forksafe installs\nexit 101\n' \
            >"$policy"
        chmod 755 "$policy"
        trap 'rm -f "$policy"' EXIT
    fi
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    # Nor at the next boot: Prometheus' service would scrape and listen on
    # :9090 for nothing.
    # (Only when this run installed it: a Prometheus the machine had is its own.)
    if [[ " ${missing[*]} " == *" prometheus "* ]]; then
        if command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
            systemctl disable --now prometheus.service >/dev/null 2>&1 || true
        elif [ -x /etc/init.d/prometheus ] && command -v update-rc.d >/dev/null; then
            update-rc.d prometheus disable >/dev/null 2>&1 || true
        fi
    fi
fi
