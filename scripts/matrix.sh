#!/usr/bin/env bash
# What the examples mean, without a kernel: for every example under
# examples/, check it, run its policy tests, and print the connectivity
# matrix its policies mean (from `polc trace`: the reference evaluator).
# The live version (scripts/demo.sh) measures the same with real traffic.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
polc_setup

echo "== building polc" >&2
cargo build --quiet --release -p polc
POLC=target/release/polc

# Endpoint names of an example, from its inventory (`endpoint NAME {`).
endpoints() { grep -ho '^endpoint [A-Za-z0-9_-]*' "$1"/*.pol | awk '{print $2}'; }

# What each flow may carry, from the candidates below; `all` when every
# candidate is allowed, `.` when none is.
CANDIDATES=("--port 80/tcp:tcp/80" "--port 9000/tcp:tcp/9000" "--port 5432/tcp:tcp/5432"
            "--port 53/udp:udp/53" "--icmp echo-request:ping")

matrix() {
  local example=$1 names from to cell candidate
  mapfile -t names < <(endpoints "$example")
  printf '  %-10s' "from\\to"
  for to in "${names[@]}"; do printf '%-20s ' "$to"; done
  echo
  for from in "${names[@]}"; do
    printf '  %-10s' "$from"
    for to in "${names[@]}"; do
      cell=""
      if [ "$from" != "$to" ]; then
        for candidate in "${CANDIDATES[@]}"; do
          # shellcheck disable=SC2086
          if "$POLC" trace "$example" --from "$from" --to "$to" ${candidate%%:*} | head -n 1 | grep -q '^ALLOWED'; then
            cell="${cell:+$cell,}${candidate##*:}"
          fi
        done
      fi
      [ "$cell" = "tcp/80,tcp/9000,tcp/5432,udp/53,ping" ] && cell="all"
      printf '%-20s ' "${cell:-.}"
    done
    echo
  done
}

for example in examples/*/; do
  example=${example%/}
  echo
  echo "=== $example"
  "$POLC" check "$example"
  "$POLC" test "$example" | tail -n 1
  echo "  allowed (of: ${CANDIDATES[*]##*:}):"
  matrix "$example"
done
echo
echo "Why a flow is denied, e.g.:"
"$POLC" trace examples/deny-demo --from demo2 --to demo1 --port 80/tcp
