#!/usr/bin/env bash
# Builds the enclave image (Dockerfile.enclave) and turns it into an EIF with nitro-cli.
#
# Usage: scripts/build-eif.sh [--production] [--signing-cert CERT.pem --private-key KEY.pem]
#                              [--out DIR] [--tag NAME] [--dry-run] [--help]
#
# Writes DIR/enclave.eif and DIR/enclave-pcr.json (PCR0, PCR1, PCR2, and PCR8 when signed).
# Clients pin these PCRs (see DEPLOYMENT.md, "How clients get and pin the PCRs").
#
#   --production        refuse a dirty git tree and base images not pinned by @sha256 digest
#   --signing-cert F    sign the EIF (PCR8 = hash of this certificate); needs --private-key
#   --private-key F     the signing key for --signing-cert
#   --out DIR           output directory (default: ./eif)
#   --tag NAME          docker image tag (default: tandem-enclave:<git short sha>)
#   --dry-run           print the commands instead of running them
#
# Environment: RUST_IMAGE, RUNTIME_IMAGE (base images; pin them by digest for production),
#              KMS_KEY_ID, KMS_REGION (baked into the image: --production requires KMS_KEY_ID),
#              SOURCE_DATE_EPOCH (default: the commit time, for reproducible builds).
set -euo pipefail

usage() { sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; }

cd "$(dirname "$0")/.."
PRODUCTION=0
DRY_RUN=0
OUT=./eif
TAG=""
SIGNING_CERT=""
PRIVATE_KEY=""
while [ $# -gt 0 ]; do
  case "$1" in
    --production) PRODUCTION=1 ;;
    --dry-run) DRY_RUN=1 ;;
    --out) OUT="${2:?--out needs a directory}"; shift ;;
    --tag) TAG="${2:?--tag needs a name}"; shift ;;
    --signing-cert) SIGNING_CERT="${2:?--signing-cert needs a file}"; shift ;;
    --private-key) PRIVATE_KEY="${2:?--private-key needs a file}"; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "error: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

if { [ -n "$SIGNING_CERT" ] && [ -z "$PRIVATE_KEY" ]; } || { [ -z "$SIGNING_CERT" ] && [ -n "$PRIVATE_KEY" ]; }; then
  echo "error: --signing-cert and --private-key go together" >&2
  exit 2
fi

SHA=$(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
TAG="${TAG:-tandem-enclave:${SHA}}"
RUST_IMAGE="${RUST_IMAGE:-rust:1.95.0-slim-bookworm}"
RUNTIME_IMAGE="${RUNTIME_IMAGE:-debian:bookworm-slim}"
SOURCE_DATE_EPOCH="${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || echo 0)}"
KMS_KEY_ID="${KMS_KEY_ID:-}"
KMS_REGION="${KMS_REGION:-us-east-1}"

if [ "$PRODUCTION" = 1 ]; then
  if [ -n "$(git status --porcelain 2>/dev/null)" ]; then
    echo "error: --production refuses a dirty tree (commit or stash first): the EIF must match a commit" >&2
    exit 1
  fi
  for image in "$RUST_IMAGE" "$RUNTIME_IMAGE"; do
    case "$image" in
      *@sha256:*) ;;
      *) echo "error: --production needs base images pinned by digest (got $image); set RUST_IMAGE/RUNTIME_IMAGE=name@sha256:..." >&2; exit 1 ;;
    esac
  done
  if [ -z "$KMS_KEY_ID" ]; then
    echo "error: --production needs KMS_KEY_ID (the key that wraps the data key; it is part of the image)" >&2
    exit 1
  fi
fi

run() {
  if [ "$DRY_RUN" = 1 ]; then
    printf '%q ' "$@"
    printf '\n'
  else
    "$@"
  fi
}

run mkdir -p "$OUT"
run docker build -f Dockerfile.enclave \
  --build-arg "RUST_IMAGE=${RUST_IMAGE}" \
  --build-arg "RUNTIME_IMAGE=${RUNTIME_IMAGE}" \
  --build-arg "SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH}" \
  --build-arg "KMS_KEY_ID=${KMS_KEY_ID}" \
  --build-arg "KMS_REGION=${KMS_REGION}" \
  -t "$TAG" .

NITRO=(nitro-cli build-enclave --docker-uri "$TAG" --output-file "$OUT/enclave.eif")
if [ -n "$SIGNING_CERT" ]; then
  NITRO+=(--signing-certificate "$SIGNING_CERT" --private-key "$PRIVATE_KEY")
fi
if [ "$DRY_RUN" = 1 ]; then
  run "${NITRO[@]}"
  echo "# then: the Measurements of nitro-cli's output are written to $OUT/enclave-pcr.json"
  exit 0
fi
"${NITRO[@]}" > "$OUT/build-enclave.json"
# nitro-cli prints {"Measurements": {"HashAlgorithm": ..., "PCR0": ..., "PCR1": ..., "PCR2": ..., "PCR8": ...}}
python3 - "$OUT/build-enclave.json" "$OUT/enclave-pcr.json" <<'PY'
import json, sys
m = json.load(open(sys.argv[1]))["Measurements"]
out = {k: m[k] for k in ("PCR0", "PCR1", "PCR2", "PCR8") if k in m}
json.dump(out, open(sys.argv[2], "w"), indent=2)
print(json.dumps(out, indent=2))
PY
echo "wrote $OUT/enclave.eif and $OUT/enclave-pcr.json"
