#!/usr/bin/env bash
# Runs the enclave EIF on this EC2 parent, starts the KMS vsock-proxy, and waits until the
# enclave answers /v1/health through the parent proxy.
#
# Usage: scripts/run-enclave.sh [--eif FILE] [--cpu-count N] [--memory MiB] [--enclave-cid CID]
#                               [--debug-mode] [--region REGION] [--health-url URL]
#                               [--dry-run] [--help]
#
#   --eif FILE        the image (default: ./eif/enclave.eif)
#   --cpu-count N     vCPUs for the enclave (default: 2; must be allocated in the allocator)
#   --memory MiB      memory for the enclave (default: 2048)
#   --enclave-cid N   the enclave's vsock CID (default: 16; the proxy dials vsock://N:5000)
#   --debug-mode      DANGER: debug console, PCRs read as zero; clients refuse it by default
#   --region REGION   AWS region of the KMS endpoint (default: $AWS_REGION or us-east-1)
#   --health-url URL  the parent proxy's health URL (default: https://127.0.0.1:443/v1/health)
#   --dry-run         print the commands instead of running them
set -euo pipefail

usage() { sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; }

EIF=./eif/enclave.eif
CPUS=2
MEMORY=2048
CID=16
DEBUG=0
DRY_RUN=0
REGION="${AWS_REGION:-us-east-1}"
HEALTH_URL="https://127.0.0.1:443/v1/health"
while [ $# -gt 0 ]; do
  case "$1" in
    --eif) EIF="${2:?--eif needs a file}"; shift ;;
    --cpu-count) CPUS="${2:?--cpu-count needs a number}"; shift ;;
    --memory) MEMORY="${2:?--memory needs MiB}"; shift ;;
    --enclave-cid) CID="${2:?--enclave-cid needs a number}"; shift ;;
    --debug-mode) DEBUG=1 ;;
    --region) REGION="${2:?--region needs a region}"; shift ;;
    --health-url) HEALTH_URL="${2:?--health-url needs a URL}"; shift ;;
    --dry-run) DRY_RUN=1 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "error: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

run() {
  if [ "$DRY_RUN" = 1 ]; then
    printf '%q ' "$@"
    printf '\n'
  else
    "$@"
  fi
}

if [ "$DEBUG" = 1 ]; then
  cat >&2 <<'WARN'
**********************************************************************
* WARNING: --debug-mode. The host can read the enclave's console and *
* memory-relevant state; its PCRs read as all zeros, so KMS policies  *
* pinning PCRs refuse it and clients refuse it unless --allow-debug. *
* NEVER run real accounts in debug mode.                             *
**********************************************************************
WARN
fi

KMS_HOST="kms.${REGION}.amazonaws.com"
ALLOWLIST=$(mktemp "${TMPDIR:-/tmp}/vsock-proxy-allowlist.XXXXXX.yaml")
cat > "$ALLOWLIST" <<YAML
allowlist:
- {address: ${KMS_HOST}, port: 443}
YAML

# The KMS relay: the enclave reaches KMS only through this vsock-proxy (CID 3, port 8000).
if [ "$DRY_RUN" = 1 ]; then
  echo "# allowlist ($ALLOWLIST): ${KMS_HOST}:443"
  run vsock-proxy 8000 "$KMS_HOST" 443 --config "$ALLOWLIST"
else
  vsock-proxy 8000 "$KMS_HOST" 443 --config "$ALLOWLIST" &
  echo "vsock-proxy for $KMS_HOST started (pid $!)"
fi

ENCLAVE=(nitro-cli run-enclave --eif-path "$EIF" --cpu-count "$CPUS" --memory "$MEMORY" --enclave-cid "$CID")
if [ "$DEBUG" = 1 ]; then
  ENCLAVE+=(--debug-mode)
fi
run "${ENCLAVE[@]}"

if [ "$DRY_RUN" = 1 ]; then
  echo "# then: wait up to 120 s for $HEALTH_URL"
  exit 0
fi
for _ in $(seq 1 120); do
  if curl -fsS --max-time 2 ${TANDEM_CA_CERT:+--cacert "$TANDEM_CA_CERT"} "$HEALTH_URL" >/dev/null 2>&1; then
    echo "enclave is healthy at $HEALTH_URL"
    exit 0
  fi
  sleep 1
done
echo "error: the enclave did not become healthy within 120 s (nitro-cli console needs --debug-mode)" >&2
exit 1
