#!/usr/bin/env bash
# The whole test suite, as CI runs it (after scripts/install.sh):
#   1. lint (ruff) and types (mypy --strict on src/);
#   2. every test on the newest SQLAlchemy (2.1) and the embedded PostgreSQL 18;
#   3. the instrumentation tests again on SQLAlchemy 2.0 (a second venv, .venv-sa20);
#   4. the exporter tests again on Debian's PostgreSQL 15 (a throw-away cluster).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python

echo "== lint and types"
.venv/bin/ruff check src tests bench dashboards
.venv/bin/ruff format --check src tests bench dashboards
.venv/bin/mypy

echo "== full suite: SQLAlchemy $($PY -c 'import sqlalchemy; print(sqlalchemy.__version__)'), embedded PostgreSQL"
$PY -m pytest "$@"

echo "== instrumentation tests on SQLAlchemy 2.0"
if [[ ! -x .venv-sa20/bin/python ]]; then
  $PY -m venv .venv-sa20
fi
.venv-sa20/bin/python -m pip install -q --upgrade pip
.venv-sa20/bin/python -m pip install -q -e '.[dev]' 'sqlalchemy[asyncio]>=2.0,<2.1'
.venv-sa20/bin/python -c 'import sqlalchemy, sys; v = sqlalchemy.__version__; print("SQLAlchemy", v); sys.exit(not v.startswith("2.0."))'
.venv-sa20/bin/python -m pytest tests/instrumentation "$@"

echo "== exporter tests on Debian's PostgreSQL 15"
bash scripts/with-debian-postgres.sh .venv/bin/python -m pytest tests/exporter "$@"
