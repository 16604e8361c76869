#!/usr/bin/env bash
# Fuzzes cmkfs's parsers and block layer with cargo fuzz (libFuzzer + AddressSanitizer).
#   usage: scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]   (default 20 s, all targets)
# Starts from the committed corpus in fuzz/corpus/TARGET; new inputs go to a temporary
# directory (run `cargo fuzz cmin` by hand to fold them back). Exits non-zero on a crash,
# leaving the reproducer in fuzz/artifacts/TARGET/.
# cargo fuzz needs nightly flags; RUSTC_BOOTSTRAP=1 lets the machine's stable toolchain take them.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH" RUSTC_BOOTSTRAP=1
SECS=${1:-20}; shift || true
TARGETS=("$@")
[ ${#TARGETS[@]} -gt 0 ] || TARGETS=(volume_header file_header block uri_params)
command -v cargo-fuzz >/dev/null || cargo install --quiet --locked cargo-fuzz@0.13.1
W=$(mktemp -d /tmp/cmkfs-fuzz.XXXXXX); trap 'rm -rf "$W"' EXIT
total=0
for t in "${TARGETS[@]}"; do
  mkdir -p "$W/$t"
  if ! cargo fuzz run --fuzz-dir fuzz "$t" "$W/$t" "fuzz/corpus/$t" -- -max_total_time="$SECS" -print_final_stats=1 > "$W/$t.log" 2>&1; then
    echo "fuzz $t: CRASH"; tail -40 "$W/$t.log"; exit 1
  fi
  runs=$(grep -oE 'stat::number_of_executed_units: *[0-9]+' "$W/$t.log" | grep -oE '[0-9]+$' || echo 0)
  total=$((total + runs))
  echo "fuzz $t: $runs executions in ${SECS}s, no crash"
done
echo "fuzz: $total executions in all"
