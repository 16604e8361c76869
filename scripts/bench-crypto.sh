#!/usr/bin/env bash
# The block crypto of the data path (criterion, no FUSE) next to the physical limit of this
# machine as `openssl speed -evp aes-256-gcm` measures it.
set -euo pipefail
cd "$(dirname "$0")/.."
echo "== cmkfs block crypto (benches/crypto.rs)"
cargo bench --bench crypto -- --warm-up-time 1 --measurement-time 3 2>/dev/null | grep -E "^block|thrpt" | grep -v "%"
echo "== openssl speed -evp aes-256-gcm (one core)"
openssl speed -seconds 2 -evp aes-256-gcm 2>/dev/null | tail -2
