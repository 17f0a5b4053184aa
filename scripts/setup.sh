#!/usr/bin/env bash
# Installs and mounts what polc needs on a fresh Debian 12 machine, as root.
# Sourced by scripts/demo.sh and scripts/test.sh; safe to run again (it only
# does what is missing). Without root it says what is missing and how to fix it.
set -euo pipefail

# Build: gcc..zlib1g-dev (libbpf-rs builds a vendored libbpf). BPF C: clang,
# llvm, libbpf-dev. Tests and demo: iproute2 (ip netns, veth), ping, bpftool.
POLC_PACKAGES=(gcc libc6-dev make pkg-config libelf-dev zlib1g-dev clang llvm libbpf-dev
               iproute2 iputils-ping bpftool)

polc_missing_packages() {
  local missing=()
  for p in "${POLC_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  echo "${missing[@]:-}"
}

polc_setup() {
  local missing
  missing=$(polc_missing_packages)
  if [ -n "$missing" ]; then
    if [ "$(id -u)" -eq 0 ]; then
      echo "setup: installing $missing" >&2
      export DEBIAN_FRONTEND=noninteractive
      apt-get update -qq >&2
      # shellcheck disable=SC2086
      apt-get install -y -qq --no-install-recommends $missing >/dev/null
    else
      echo "setup: missing packages: $missing" >&2
      echo "setup: run as root, or: sudo apt-get update && sudo apt-get install -y $missing" >&2
      return 1
    fi
  fi
  if ! command -v cargo >/dev/null 2>&1; then
    if [ -x "$HOME/.cargo/bin/cargo" ]; then
      export PATH="$HOME/.cargo/bin:$PATH"
    else
      echo "setup: no Rust toolchain (cargo) found; install one with rustup" >&2
      return 1
    fi
  fi
  # bpffs is not mounted on a new machine; pinned maps and links need it.
  if ! mount | grep -q " /sys/fs/bpf type bpf"; then
    if [ "$(id -u)" -eq 0 ]; then
      mount -t bpf bpf /sys/fs/bpf
      echo "setup: mounted bpffs on /sys/fs/bpf" >&2
    else
      echo "setup: bpffs is not mounted and mounting needs root: kernel tests will be skipped" >&2
    fi
  fi
}
