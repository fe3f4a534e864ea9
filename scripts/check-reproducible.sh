#!/usr/bin/env bash
# The full reproducibility check of the enclave image (too slow for every CI run): two clean
# release builds of the committed tree in two different directories, each packed into an
# image with the same kernel, must give identical binaries, identical EIF bytes and identical
# PCR0, PCR1 and PCR2.
#
# Usage: scripts/check-reproducible.sh --blobs DIR | --kernel FILE [--cmdline STR] [--nsm-module FILE]
#                                      [--work DIR] [--keep] [--dry-run] [--help]
#
#   --blobs DIR       nitro-cli's blobs (bzImage, cmdline, nsm.ko): the production inputs
#   --kernel FILE     any bzImage (e.g. the test kernel scripts/image-tools.sh unpacks)
#   --cmdline STR     kernel command line with --kernel (default: console=ttyS0)
#   --nsm-module F    the NSM module with --kernel
#   --work DIR        where the two trees go (default: a new directory under $TMPDIR)
#   --keep            keep the two trees and their target directories
#   --dry-run         print the commands instead of running them
#
# Each tree is `git archive HEAD` (commit first: uncommitted changes are not checked) with
# its own CARGO_TARGET_DIR, so nothing is shared but the toolchain, the registry sources
# and SOURCE_DATE_EPOCH (the commit time).
set -euo pipefail

usage() { sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; }

cd "$(dirname "$0")/.."
KERNEL_ARGS=()
HAVE_KERNEL=0
CMDLINE_GIVEN=0
WORK=""
KEEP=0
DRY_RUN=0
while [ $# -gt 0 ]; do
  case "$1" in
    --blobs) KERNEL_ARGS+=(--blobs "${2:?--blobs needs a directory}"); HAVE_KERNEL=1; CMDLINE_GIVEN=1; shift ;;
    --kernel) KERNEL_ARGS+=(--kernel "$(realpath "${2:?--kernel needs a file}")"); HAVE_KERNEL=1; shift ;;
    --cmdline) KERNEL_ARGS+=(--cmdline "${2:?--cmdline needs a string}"); CMDLINE_GIVEN=1; shift ;;
    --nsm-module) KERNEL_ARGS+=(--nsm-module "$(realpath "${2:?--nsm-module needs a file}")"); shift ;;
    --work) WORK="${2:?--work needs a directory}"; shift ;;
    --keep) KEEP=1 ;;
    --dry-run) DRY_RUN=1 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "error: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
[ "$HAVE_KERNEL" = 1 ] || { echo "error: --blobs DIR or --kernel FILE is required" >&2; exit 2; }
[ "$CMDLINE_GIVEN" = 1 ] || KERNEL_ARGS+=(--cmdline "console=ttyS0")

# The trees are made from the last commit: this needs a git checkout (a dry run outside one,
# e.g. the suite's isolated copy, prints the plan with placeholders).
if git rev-parse --git-dir >/dev/null 2>&1; then
  SOURCE_DATE_EPOCH=$(git log -1 --format=%ct)
  COMMIT=$(git rev-parse HEAD)
elif [ "$DRY_RUN" = 1 ]; then
  SOURCE_DATE_EPOCH=0
  COMMIT=HEAD
else
  echo "error: not a git checkout: the trees are made with git archive of the last commit" >&2; exit 2
fi
export SOURCE_DATE_EPOCH
if [ -z "$WORK" ]; then
  if [ "$DRY_RUN" = 1 ]; then WORK="${TMPDIR:-/tmp}/tandem-repro.XXXXXX"; else WORK=$(mktemp -d "${TMPDIR:-/tmp}/tandem-repro.XXXXXX"); fi
fi

run() {
  if [ "$DRY_RUN" = 1 ]; then
    printf '%q ' "$@"
    printf '\n'
  else
    "$@"
  fi
}

for tree in one two-"$RANDOM"; do
  dir="$WORK/$tree"
  run mkdir -p "$dir/src"
  if [ "$DRY_RUN" = 1 ]; then
    echo "git archive $COMMIT | tar -x -C $dir/src"
  else
    git archive --format=tar "$COMMIT" | tar -x -C "$dir/src"
  fi
  start=$SECONDS
  run env CARGO_TARGET_DIR="$dir/target" "$dir/src/scripts/build-image.sh" "${KERNEL_ARGS[@]}" --out "$dir/eif"
  [ "$DRY_RUN" = 1 ] || echo "$tree: clean build and pack in $((SECONDS - start)) s"
done
[ "$DRY_RUN" = 0 ] || exit 0

mapfile -t TREES < <(find "$WORK" -mindepth 1 -maxdepth 1 -type d | sort)
A="${TREES[0]}"
B="${TREES[1]}"
status=0
for bin in tandem-enclave tandem-init; do
  a=$(sha256sum "$A/target/x86_64-unknown-linux-gnu/release/$bin" | cut -d' ' -f1)
  b=$(sha256sum "$B/target/x86_64-unknown-linux-gnu/release/$bin" | cut -d' ' -f1)
  if [ "$a" = "$b" ]; then echo "ok: $bin identical ($a)"; else echo "FAIL: $bin differs ($a vs $b)"; status=1; fi
done
if cmp -s "$A/eif/enclave.eif" "$B/eif/enclave.eif"; then echo "ok: enclave.eif identical"; else echo "FAIL: enclave.eif differs"; status=1; fi
if cmp -s "$A/eif/enclave-pcr.json" "$B/eif/enclave-pcr.json"; then
  echo "ok: identical PCR0, PCR1, PCR2 for commit $COMMIT:"
  cat "$A/eif/enclave-pcr.json"
else
  echo "FAIL: the PCRs differ:"; diff "$A/eif/enclave-pcr.json" "$B/eif/enclave-pcr.json" || true
  status=1
fi
[ "$KEEP" = 1 ] || rm -rf "$WORK"
exit "$status"
