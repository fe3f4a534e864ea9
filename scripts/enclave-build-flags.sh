#!/usr/bin/env bash
# The flags Dockerfile.enclave builds the enclave with, for CI and scripts to share.
# Source it: `. scripts/enclave-build-flags.sh`.
export CARGO_INCREMENTAL=0
export SOURCE_DATE_EPOCH="${SOURCE_DATE_EPOCH:-0}"
TANDEM_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export TANDEM_ENCLAVE_RUSTFLAGS="--remap-path-prefix=${TANDEM_ROOT}=/tandem --remap-path-prefix=${CARGO_HOME:-$HOME/.cargo}=/cargo -C codegen-units=1 -C strip=symbols"
