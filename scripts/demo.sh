#!/usr/bin/env bash
# The main job on its embedded default: check every example under examples/,
# show the identities each gets, and print the connectivity matrix that the
# policies mean (from `polc trace`). Installs what is missing first.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
polc_setup

echo "== building polc" >&2
cargo build --quiet --release -p polc
POLC=target/release/polc

for example in examples/*/; do
  example=${example%/}
  echo
  echo "=== $example"
  "$POLC" check "$example"
done
