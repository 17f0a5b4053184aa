#!/usr/bin/env bash
# Runs the whole test suite: installs what is missing, mounts bpffs, then
# `cargo test --workspace`. Kernel tests need root (CAP_BPF, CAP_NET_ADMIN);
# without it they say why they are skipped, and with CI=true a skip fails.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
polc_setup
cargo test --workspace --locked "$@"
