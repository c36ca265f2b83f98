#!/usr/bin/env bash
# Run a command with POOLWATCH_TEST_DSN pointing at a throw-away cluster of Debian's
# PostgreSQL (the newest major installed under /usr/lib/postgresql), deleted afterwards.
set -euo pipefail
BIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)
if [[ -z "$BIN" || ! -x "$BIN/initdb" ]]; then
  if [[ "${POOLWATCH_REQUIRE_ALL:-}" == 1 ]]; then
    echo "error: Debian's postgresql is not installed (run scripts/install.sh)" >&2; exit 1
  fi
  echo "skipping: Debian's postgresql is not installed" >&2; exit 0
fi
DIR=$(mktemp -d /tmp/poolwatch-pg-debian-XXXXXX)
chmod 755 "$DIR"
RUNAS=()
if [[ $(id -u) -eq 0 ]]; then
  chown postgres "$DIR"
  RUNAS=(runuser -u postgres --)
fi
cleanup() {
  "${RUNAS[@]}" "$BIN/pg_ctl" -D "$DIR/data" -m immediate -w stop >/dev/null 2>&1 || true
  rm -rf "$DIR"
}
trap cleanup EXIT
"${RUNAS[@]}" "$BIN/initdb" -D "$DIR/data" -U postgres --auth=trust >/dev/null
"${RUNAS[@]}" "$BIN/pg_ctl" -D "$DIR/data" -w -l "$DIR/log" \
  -o "-c listen_addresses='' -c unix_socket_directories='$DIR' -c max_connections=200" start >/dev/null
echo "Debian PostgreSQL $("$BIN/postgres" --version | awk '{print $3}') on socket $DIR"
POOLWATCH_TEST_DSN="postgresql://postgres@/postgres?host=$DIR" "$@"
