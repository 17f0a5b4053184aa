#!/usr/bin/env bash
# The live demo, as root: the seed's endpoints (app1, app2, app3; demo1,
# demo2) in network namespaces, polcd enforcing examples/l3-l4-rule and
# examples/deny-demo on their veths, the connectivity matrix from real
# traffic, the seed's change (deny demo2 -> demo1) by editing a policy file,
# the matrix again and the reload time. Cleans up after itself, also on
# Ctrl-C (runtime/examples/live-demo.rs does the work).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
polc_setup
if [ "$(id -u)" -ne 0 ]; then
  echo "demo: needs root (network namespaces, BPF); without it, bash scripts/matrix.sh shows what the policies mean" >&2
  exit 2
fi

echo "== building polcd and the demo" >&2
cargo build --quiet -p polc-runtime --bin polcd --example live-demo
WORK=$(mktemp -d /tmp/polc-demo.XXXXXX)
PREFIX="polcdemo$$"

# The demo removes what it made; this is the safety net if it is killed hard.
cleanup() {
  set +e
  target/debug/polcd --state "$WORK/state" reset >/dev/null 2>&1
  for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep "^$PREFIX-"); do ip netns del "$ns"; done
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

target/debug/examples/live-demo --polcd target/debug/polcd --examples examples --work "$WORK" --prefix "$PREFIX"
