#!/usr/bin/env bash
# Builds the enclave image without Docker: the static enclave binary and our init (with
# Dockerfile.enclave's flags), packed with a kernel given by path into a reproducible EIF.
#
# Usage: scripts/build-image.sh --blobs DIR | --kernel FILE (--cmdline STR | --cmdline-file FILE)
#                               [--nsm-module FILE] [--enclave BIN] [--init BIN]
#                               [--signing-cert CERT.pem --private-key KEY.pem]
#                               [--production] [--out DIR] [--dry-run] [--help]
#
# Writes DIR/enclave.eif and DIR/enclave-pcr.json (PCR0, PCR1, PCR2, and PCR8 when signed),
# the same shape scripts/build-eif.sh writes. See DEPLOYMENT.md, "Build the image".
#
#   --blobs DIR         nitro-cli's blobs (aws-nitro-enclaves-cli-devel installs them in
#                       /usr/share/nitro_enclaves/blobs): DIR/bzImage, DIR/cmdline, DIR/nsm.ko
#   --kernel FILE       any bzImage (tests); with --cmdline or --cmdline-file
#   --nsm-module FILE   the NSM driver, loaded by the init first (with --kernel)
#   --enclave BIN       pack this enclave binary instead of building it (must be static)
#   --init BIN          pack this init instead of building image/init (must be static)
#   --signing-cert F    sign the image (PCR8 = hash of this certificate); needs --private-key
#   --private-key F     the P-384 key (PEM) for --signing-cert
#   --production        refuse a dirty tree, missing KMS_KEY_ID, and --enclave/--init
#   --out DIR           output directory (default: ./eif)
#   --dry-run           print the commands instead of running them
#
# Environment: KMS_KEY_ID, KMS_REGION (baked into the image, so into PCR2),
#              SOURCE_DATE_EPOCH (default: the commit time; every time in the archives).
set -euo pipefail

usage() { sed -n '2,26p' "$0" | sed 's/^# \{0,1\}//'; }

cd "$(dirname "$0")/.."
KERNEL=""
CMDLINE=""
CMDLINE_FILE=""
NSM=""
ENCLAVE=""
INIT=""
SIGNING_CERT=""
PRIVATE_KEY=""
PRODUCTION=0
DRY_RUN=0
OUT=./eif
while [ $# -gt 0 ]; do
  case "$1" in
    --blobs)
      BLOBS="${2:?--blobs needs a directory}"; shift
      KERNEL="$BLOBS/bzImage"; CMDLINE_FILE="$BLOBS/cmdline"; NSM="$BLOBS/nsm.ko" ;;
    --kernel) KERNEL="${2:?--kernel needs a file}"; shift ;;
    --cmdline) CMDLINE="${2:?--cmdline needs a string}"; shift ;;
    --cmdline-file) CMDLINE_FILE="${2:?--cmdline-file needs a file}"; shift ;;
    --nsm-module) NSM="${2:?--nsm-module needs a file}"; shift ;;
    --enclave) ENCLAVE="${2:?--enclave needs a binary}"; shift ;;
    --init) INIT="${2:?--init needs a binary}"; shift ;;
    --signing-cert) SIGNING_CERT="${2:?--signing-cert needs a file}"; shift ;;
    --private-key) PRIVATE_KEY="${2:?--private-key needs a file}"; shift ;;
    --production) PRODUCTION=1 ;;
    --out) OUT="${2:?--out needs a directory}"; shift ;;
    --dry-run) DRY_RUN=1 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "error: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

[ -n "$KERNEL" ] || { echo "error: --blobs DIR or --kernel FILE is required" >&2; exit 2; }
if [ -z "$CMDLINE" ] && [ -z "$CMDLINE_FILE" ]; then
  echo "error: --cmdline or --cmdline-file (or --blobs) is required" >&2; exit 2
fi
if { [ -n "$SIGNING_CERT" ] && [ -z "$PRIVATE_KEY" ]; } || { [ -z "$SIGNING_CERT" ] && [ -n "$PRIVATE_KEY" ]; }; then
  echo "error: --signing-cert and --private-key go together" >&2; exit 2
fi
if [ "$PRODUCTION" = 1 ]; then
  if [ -n "$(git status --porcelain 2>/dev/null)" ]; then
    echo "error: --production refuses a dirty tree (commit or stash first): the EIF must match a commit" >&2; exit 1
  fi
  if [ -z "${KMS_KEY_ID:-}" ]; then
    echo "error: --production needs KMS_KEY_ID (the key that wraps the data key; it is part of the image)" >&2; exit 1
  fi
  if [ -n "$ENCLAVE$INIT" ]; then
    echo "error: --production builds the enclave and the init from this commit: drop --enclave/--init" >&2; exit 1
  fi
fi

export SOURCE_DATE_EPOCH="${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || echo 0)}"
# shellcheck source=scripts/enclave-build-flags.sh
. ./scripts/enclave-build-flags.sh
# One target directory for both workspaces (the main one and image/), so the binaries are
# found in one place.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$(pwd)/target}"
TARGET_DIR="$CARGO_TARGET_DIR"
BIN_DIR="$TARGET_DIR/$TANDEM_ENCLAVE_TARGET/release"

run() {
  if [ "$DRY_RUN" = 1 ]; then
    printf '%q ' "$@"
    printf '\n'
  else
    "$@"
  fi
}

# The enclave and the init: one static release build each, with the image's flags.
if [ -z "$ENCLAVE" ]; then
  run env RUSTFLAGS="$TANDEM_ENCLAVE_RUSTFLAGS" cargo build --locked --release \
    --target "$TANDEM_ENCLAVE_TARGET" -p tandem-enclave
  ENCLAVE="$BIN_DIR/tandem-enclave"
fi
if [ -z "$INIT" ]; then
  run env RUSTFLAGS="$TANDEM_ENCLAVE_RUSTFLAGS" cargo build --locked --release \
    --target "$TANDEM_ENCLAVE_TARGET" --manifest-path image/Cargo.toml -p tandem-init
  INIT="$BIN_DIR/tandem-init"
fi
# The packer runs on the build host: an ordinary build.
run cargo build --locked --release --manifest-path image/Cargo.toml -p tandem-image
TOOL="$TARGET_DIR/release/tandem-image"

if [ "$DRY_RUN" = 0 ]; then
  for bin in "$ENCLAVE" "$INIT"; do
    if readelf -d "$bin" 2>/dev/null | grep -q NEEDED || readelf -l "$bin" | grep -q INTERP; then
      echo "error: $bin is dynamically linked; the image has no loader (build it with crt-static)" >&2; exit 1
    fi
  done
fi

PACK=("$TOOL" pack --kernel "$KERNEL" --init "$INIT" --enclave "$ENCLAVE" --out "$OUT"
      --source-date-epoch "$SOURCE_DATE_EPOCH" --kms-region "${KMS_REGION:-us-east-1}")
if [ -n "$CMDLINE" ]; then PACK+=(--cmdline "$CMDLINE"); else PACK+=(--cmdline-file "$CMDLINE_FILE"); fi
[ -z "$NSM" ] || PACK+=(--nsm-module "$NSM")
[ -z "${KMS_KEY_ID:-}" ] || PACK+=(--kms-key-id "$KMS_KEY_ID")
[ -z "$SIGNING_CERT" ] || PACK+=(--signing-cert "$SIGNING_CERT" --private-key "$PRIVATE_KEY")
run "${PACK[@]}"
[ "$DRY_RUN" = 1 ] || echo "wrote $OUT/enclave.eif and $OUT/enclave-pcr.json"
