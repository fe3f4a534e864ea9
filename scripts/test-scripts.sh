#!/usr/bin/env bash
# Tests of the operator scripts: shellcheck on every script, and the commands their
# --dry-run prints. Run by scripts/test.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

pass=0
fail=0
check() { # check NAME HAYSTACK NEEDLE
  if grep -qF -- "$3" <<<"$2"; then
    pass=$((pass + 1))
  else
    fail=$((fail + 1))
    echo "FAIL: $1: expected to find: $3" >&2
  fi
}
refuses() { # refuses NAME COMMAND...
  local name=$1; shift
  if "$@" >/dev/null 2>&1; then
    fail=$((fail + 1)); echo "FAIL: $name: expected a non-zero exit" >&2
  else
    pass=$((pass + 1))
  fi
}

shellcheck -x scripts/*.sh .ci/run && pass=$((pass + 1))

out=$(scripts/fuzz.sh --dry-run --seconds 5 envelope 2>&1)
check "fuzz dry-run" "$out" "cargo +nightly fuzz run --release envelope corpus/envelope -- -max_total_time=5"
refuses "fuzz unknown target" scripts/fuzz.sh --dry-run no-such-target
check "fuzz help" "$(scripts/fuzz.sh --help)" "--seconds N"

out=$(scripts/build-eif.sh --dry-run --out /tmp/eif-out --tag tandem:test)
check "build-eif docker" "$out" "docker build -f Dockerfile.enclave"
check "build-eif tag" "$out" "-t tandem:test ."
check "build-eif nitro" "$out" "nitro-cli build-enclave --docker-uri tandem:test --output-file /tmp/eif-out/enclave.eif"
check "build-eif epoch" "$out" "SOURCE_DATE_EPOCH="
out=$(scripts/build-eif.sh --dry-run --tag t --signing-cert c.pem --private-key k.pem)
check "build-eif signing" "$out" "--signing-certificate c.pem --private-key k.pem"
refuses "build-eif half signing" scripts/build-eif.sh --dry-run --signing-cert c.pem
refuses "build-eif unpinned production" env RUST_IMAGE=rust:1 scripts/build-eif.sh --dry-run --production
refuses "build-eif unknown flag" scripts/build-eif.sh --bogus
check "build-eif help" "$(scripts/build-eif.sh --help)" "--production"

out=$(scripts/run-enclave.sh --dry-run --cpu-count 4 --memory 4096 --enclave-cid 21 --region eu-west-1 2>&1)
check "run-enclave nitro" "$out" "nitro-cli run-enclave --eif-path ./eif/enclave.eif --cpu-count 4 --memory 4096 --enclave-cid 21"
check "run-enclave vsock-proxy" "$out" "vsock-proxy 8000 kms.eu-west-1.amazonaws.com 443 --config"
check "run-enclave health" "$out" "/v1/health"
if grep -qF -- "--debug-mode" <<<"$out"; then fail=$((fail + 1)); echo "FAIL: debug mode without the flag" >&2; else pass=$((pass + 1)); fi
out=$(scripts/run-enclave.sh --dry-run --debug-mode 2>&1)
check "run-enclave debug flag" "$out" "--enclave-cid 16 --debug-mode"
check "run-enclave debug warning" "$out" "WARNING: --debug-mode"
refuses "run-enclave unknown flag" scripts/run-enclave.sh --bogus
check "run-enclave help" "$(scripts/run-enclave.sh --help)" "--cpu-count"

echo "scripts: $pass passed, $fail failed"
[ "$fail" = 0 ]
