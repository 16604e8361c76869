#!/usr/bin/env bash
# Compares two cmkfs builds side by side with fio on the same backing directory, interleaved
# and repeated: e.g. a build of an earlier commit (format 1) against this tree (format 2).
#
#   sudo scripts/bench-compare.sh BASE_BINARY [--rounds 3] [--size 256M] [--runtime 10]
#                                 [--base-env VAR=VALUE]...
#
#   git worktree add /tmp/base <commit> && (cd /tmp/base && cargo build --release)
#   sudo scripts/bench-compare.sh /tmp/base/target/release/cmkfs
#
# Prints the median of each job for both builds and the ratio new/base. --base-env sets a
# variable in the base daemon's environment only; with this tree's own binary as BASE it
# measures one knob, e.g. the backing readahead that cmkfs turns off:
#
#   sudo scripts/bench-compare.sh target/release/cmkfs --base-env CMKFS_BACKING_READAHEAD=1
set -euo pipefail
cd "$(dirname "$0")/.."
BASE=$(realpath "${1:?usage: bench-compare.sh BASE_BINARY [options]}"); shift
ROUNDS=3 SIZE=256M RUNTIME=10 DIR=/var/tmp/cmkfs-bench-compare BASE_ENV=()
while [ $# -gt 0 ]; do
  case $1 in
    --rounds) ROUNDS=$2; shift ;;
    --size) SIZE=$2; shift ;;
    --runtime) RUNTIME=$2; shift ;;
    --base-env) BASE_ENV+=("$2"); shift ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
  shift
done
command -v fio >/dev/null || { apt-get update -qq; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq fio >/dev/null; }
cargo build --release --locked --quiet
NEW=$PWD/target/release/cmkfs
export CMKFS_AUDIT_LOG=$DIR/audit.jsonl CMKFS_CONFIG_DIR=$DIR/config
cleanup() { for m in "$DIR"/*/mnt; do mountpoint -q "$m" 2>/dev/null && umount -l "$m"; done; true; }
trap cleanup EXIT
cleanup; rm -rf "$DIR"; mkdir -p "$DIR"
declare -A BIN=([base]=$BASE [new]=$NEW)
for t in base new; do
  d=$DIR/$t; mkdir -p "$d/mnt"
  uri=$("${BIN[$t]}" key create --store "$d/keys" bench --bits 3072 | tail -n1)
  "${BIN[$t]}" init --kek "$uri" "$d/back" >/dev/null
  envs=(); [ $t = base ] && envs=("${BASE_ENV[@]}")
  env "${envs[@]}" "${BIN[$t]}" mount --log-file "$d/daemon.log" "$d/back" "$d/mnt" >/dev/null 2>&1
done
RES=$DIR/results.jsonl; : > "$RES"
drop() { sync; echo 3 > /proc/sys/vm/drop_caches; }
job() { # target round name fio-args...
  local t=$1 r=$2 name=$3; shift 3
  local d=$DIR/$t/mnt/fio; mkdir -p "$d"
  fio --name="$name" --directory="$d" --ioengine=psync --output-format=json "$@" > "$DIR/last.json" 2>/dev/null
  python3 - "$t" "$r" "$name" "$DIR/last.json" >> "$RES" <<'PY'
import json, sys
j = json.load(open(sys.argv[4]))["jobs"][0]
v = (j["read"]["bw"] + j["write"]["bw"]) / 1024.0 if sys.argv[3].startswith("seq") else j["read"]["iops"] + j["write"]["iops"]
print(json.dumps({"target": sys.argv[1], "round": int(sys.argv[2]), "job": sys.argv[3], "value": v}))
PY
}
for r in $(seq 0 $((ROUNDS - 1))); do
  echo "round $((r + 1))/$ROUNDS ..." >&2
  order=(base new); [ $((r % 2)) = 1 ] && order=(new base)
  for t in "${order[@]}"; do
    rm -rf "$DIR/$t/mnt/fio"
    job "$t" "$r" seq-write-1M --rw=write --bs=1M --size="$SIZE" --end_fsync=1 --filename=seq
    drop
    job "$t" "$r" seq-read-1M --rw=read --bs=1M --size="$SIZE" --filename=seq
    job "$t" "$r" randread-4k --rw=randread --bs=4k --size="$SIZE" --filename=seq --time_based --runtime="$RUNTIME"
    job "$t" "$r" randwrite-4k --rw=randwrite --bs=4k --size="$SIZE" --filename=seq --time_based --runtime="$RUNTIME" --end_fsync=1
    job "$t" "$r" append-512B --rw=write --bs=512 --size=64M --filename=append --end_fsync=1 --time_based --runtime="$RUNTIME"
    job "$t" "$r" fdatasync-8k --rw=write --bs=8k --size=64M --filename=sync --fdatasync=1 --time_based --runtime="$RUNTIME"
  done
done
python3 - "$RES" "$ROUNDS" "$SIZE" "$RUNTIME" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
jobs = list(dict.fromkeys(r["job"] for r in rows))
med = lambda j, t: statistics.median([r["value"] for r in rows if r["job"] == j and r["target"] == t])
print(f"fio psync QD1, size {sys.argv[3]}, {sys.argv[4]}s timed jobs, median of {sys.argv[2]} rounds (MiB/s for seq-*, IOPS otherwise)\n")
print("| job | base | new | new / base |\n|---|---|---|---|")
for j in jobs:
    b, n = med(j, "base"), med(j, "new")
    print(f"| {j} | {b:,.0f} | {n:,.0f} | {n/b:.2f}x |")
PY
