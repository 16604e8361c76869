#!/usr/bin/env bash
# Side-by-side fio benchmark: the raw directory, a FUSE passthrough (bindfs), gocryptfs and
# cmkfs, all on the same backing directory, measured in one run, interleaved and repeated.
# Prints a Markdown table with each target's median and the ratios cmkfs/gocryptfs and
# cmkfs/passthrough, and writes an SVG chart.
#
#   sudo scripts/bench.sh [--quick] [--rounds N] [--size 512M] [--runtime 15] [--no-pgbench]
#                         [--dir /var/tmp/cmkfs-bench] [--out bench-results]
#
# Installs fio, bindfs, gocryptfs (and postgresql for pgbench) if missing. Numbers are only
# comparable within one run: the machine is shared and noisy.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
ROUNDS=3 SIZE=512M RUNTIME=15 PGBENCH=1 DIR=/var/tmp/cmkfs-bench OUT=$ROOT/bench-results
while [ $# -gt 0 ]; do
  case $1 in
    --quick) ROUNDS=1 SIZE=64M RUNTIME=3 ;;
    --rounds) ROUNDS=$2; shift ;;
    --size) SIZE=$2; shift ;;
    --runtime) RUNTIME=$2; shift ;;
    --no-pgbench) PGBENCH=0 ;;
    --dir) DIR=$2; shift ;;
    --out) OUT=$2; shift ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
  shift
done
[ "$(id -u)" = 0 ] || { echo "run as root (mounts filesystems, drops caches)" >&2; exit 2; }
need=(fio bindfs gocryptfs fuse3)
[ "$PGBENCH" = 1 ] && need+=(postgresql postgresql-contrib)
missing=(); for p in "${need[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then apt-get update -qq; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null; fi
cargo build --release --locked --quiet
B=$ROOT/target/release/cmkfs
mkdir -p "$OUT"
RES=$OUT/results.jsonl; : > "$RES"
export CMKFS_AUDIT_LOG=$DIR/audit.jsonl CMKFS_CONFIG_DIR=$DIR/config

cleanup() {
  for m in "$DIR"/*/mnt; do mountpoint -q "$m" 2>/dev/null && umount -l "$m"; done
  true
}
trap cleanup EXIT
cleanup
rm -rf "$DIR"; mkdir -p "$DIR"

setup_target() { # name -> prints the directory to benchmark
  local t=$1 d=$DIR/$1
  mkdir -p "$d/mnt" "$d/back"
  case $t in
    raw) echo "$d/back" ;;
    passthrough) bindfs -o allow_other "$d/back" "$d/mnt"; echo "$d/mnt" ;;
    gocryptfs)
      rm -rf "$d/back"; mkdir -p "$d/back"; printf 'benchpw' > "$d/pw"
      gocryptfs -q -init -passfile "$d/pw" "$d/back" >/dev/null 2>&1
      gocryptfs -q -allow_other -passfile "$d/pw" "$d/back" "$d/mnt"; echo "$d/mnt" ;;
    cmkfs)
      rm -rf "$d/back"
      local uri; uri=$("$B" key create --store "$d/keys" bench --bits 3072 | tail -n1)
      "$B" init --kek "$uri" "$d/back" >/dev/null
      "$B" mount --allow-other --log-file "$d/daemon.log" "$d/back" "$d/mnt" 2>/dev/null; echo "$d/mnt" ;;
  esac
}

TARGETS=(raw passthrough gocryptfs cmkfs)
declare -A PATHS
for t in "${TARGETS[@]}"; do PATHS[$t]=$(setup_target "$t"); done

drop() { sync; echo 3 > /proc/sys/vm/drop_caches; }

fio_job() { # target round name -- fio args... ; records the figure
  local t=$1 r=$2 name=$3; shift 4
  local d=${PATHS[$t]}/fio; mkdir -p "$d"
  local json
  fio --name="$name" --directory="$d" --ioengine=psync --output-format=json "$@" > "$DIR/last.json" 2>/dev/null
  python3 - "$t" "$r" "$name" "$DIR/last.json" <<'PY' >> "$RES"
import json, sys
j = json.load(open(sys.argv[4]))["jobs"][0]
t, r, name = sys.argv[1], int(sys.argv[2]), sys.argv[3]
rd, wr = j["read"], j["write"]
bw = (rd["bw"] + wr["bw"]) / 1024.0
iops = rd["iops"] + wr["iops"]
unit, val = ("MiB/s", bw) if name in ("seq-write-1M", "seq-read-1M") else ("IOPS", iops)
print(json.dumps({"target": t, "round": r, "job": name, "value": val, "unit": unit}))
PY
}

run_round() {
  local r=$1 t d
  # Rotate the order each round so no target always runs first (warm or cold machine).
  local order=("${TARGETS[@]:r%4}" "${TARGETS[@]:0:r%4}")
  for t in "${order[@]}"; do
    d=${PATHS[$t]}/fio; rm -rf "$d"; mkdir -p "$d"
    fio_job "$t" "$r" seq-write-1M -- --rw=write --bs=1M --size="$SIZE" --end_fsync=1 --filename=seq
    drop
    fio_job "$t" "$r" seq-read-1M -- --rw=read --bs=1M --size="$SIZE" --filename=seq
    drop
    fio_job "$t" "$r" randread-4k -- --rw=randread --bs=4k --size="$SIZE" --filename=seq --time_based --runtime="$RUNTIME"
    fio_job "$t" "$r" randwrite-4k -- --rw=randwrite --bs=4k --size="$SIZE" --filename=seq --time_based --runtime="$RUNTIME" --end_fsync=1
    fio_job "$t" "$r" mixed-70-30-4k -- --rw=randrw --rwmixread=70 --bs=4k --size="$SIZE" --filename=seq --time_based --runtime="$RUNTIME"
    fio_job "$t" "$r" append-512B -- --rw=write --bs=512 --size=64M --filename=append --end_fsync=1 --time_based --runtime="$RUNTIME"
    fio_job "$t" "$r" fdatasync-8k -- --rw=write --bs=8k --size=64M --filename=sync --fdatasync=1 --time_based --runtime="$RUNTIME"
    rm -rf "$d"
  done
}

pgbench_round() {
  local r=$1 t d pgbin
  pgbin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n1)
  for t in "${TARGETS[@]}"; do
    d=${PATHS[$t]}/pg; rm -rf "$d"; mkdir -p "$d"; chown postgres "$d"
    su postgres -c "$pgbin/initdb -D $d/data -A trust" >/dev/null
    su postgres -c "$pgbin/pg_ctl -D $d/data -o '-p 55432 -k /tmp -c listen_addresses=' -l $d/log -w start" >/dev/null
    su postgres -c "$pgbin/pgbench -h /tmp -p 55432 -i -s 10 postgres" >/dev/null 2>&1
    local tps
    tps=$(su postgres -c "$pgbin/pgbench -h /tmp -p 55432 -c 4 -j 2 -T $RUNTIME postgres" 2>/dev/null | awk '/^tps/ {print $3; exit}')
    su postgres -c "$pgbin/pg_ctl -D $d/data -m fast -w stop" >/dev/null
    echo "{\"target\": \"$t\", \"round\": $r, \"job\": \"pgbench-tps\", \"value\": ${tps:-0}, \"unit\": \"TPS\"}" >> "$RES"
    rm -rf "$d"
  done
}

for r in $(seq 0 $((ROUNDS - 1))); do
  echo "round $((r + 1))/$ROUNDS ..." >&2
  run_round "$r"
  [ "$PGBENCH" = 1 ] && pgbench_round "$r"
done

# Peak RSS of the cmkfs daemon during the run.
pid=$("$B" status --json "${PATHS[cmkfs]}" | python3 -c 'import json,sys; print(json.load(sys.stdin)["pid"])')
rss=$(awk '/VmHWM/ {print $2}' "/proc/$pid/status")

python3 - "$RES" "$OUT" "$rss" "$ROUNDS" "$SIZE" "$RUNTIME" <<'PY'
import json, statistics, sys, platform, os
res, out, rss, rounds, size, runtime = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5], sys.argv[6]
rows = [json.loads(l) for l in open(res)]
jobs = []
for r in rows:
    if r["job"] not in jobs: jobs.append(r["job"])
targets = ["raw", "passthrough", "gocryptfs", "cmkfs"]
med = {(j, t): statistics.median([r["value"] for r in rows if r["job"] == j and r["target"] == t] or [0]) for j in jobs for t in targets}
unit = {r["job"]: r["unit"] for r in rows}
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
lines = [f"Machine: {os.cpu_count()} vCPU {cpu}, kernel {platform.release()}; fio psync QD1, size {size}, {runtime}s timed jobs, median of {rounds} round(s); cmkfs daemon peak RSS {rss/1024:.1f} MiB.", "",
         "| workload | unit | raw | passthrough (bindfs) | gocryptfs | cmkfs | cmkfs / gocryptfs | cmkfs / passthrough |",
         "|---|---|---|---|---|---|---|---|"]
def f(v): return f"{v:,.0f}" if v >= 100 else f"{v:.1f}"
for j in jobs:
    g, p, c = med[(j, "gocryptfs")], med[(j, "passthrough")], med[(j, "cmkfs")]
    lines.append(f"| {j} | {unit[j]} | {f(med[(j,'raw')])} | {f(p)} | {f(g)} | {f(c)} | {c/g if g else 0:.2f}x | {c/p if p else 0:.2f}x |")
table = "\n".join(lines)
open(os.path.join(out, "table.md"), "w").write(table + "\n")
print(table)
# SVG chart: cmkfs/gocryptfs and cmkfs/passthrough ratios per workload.
W, H, left, bar = 760, 40 + 34 * len(jobs), 170, 12
scale = max([med[(j, "cmkfs")] / med[(j, "gocryptfs")] for j in jobs if med[(j, "gocryptfs")]] + [1.5]) * 1.1
svg = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">',
       f'<text x="10" y="18" font-size="14">cmkfs throughput relative to gocryptfs (blue) and a FUSE passthrough (grey); 1.0 = equal</text>']
x1 = left + (W - left - 60) / scale
svg.append(f'<line x1="{x1:.0f}" y1="26" x2="{x1:.0f}" y2="{H-4}" stroke="red" stroke-dasharray="4"/>')
for i, j in enumerate(jobs):
    y = 34 + 34 * i
    svg.append(f'<text x="10" y="{y+14}">{j}</text>')
    for k, (t, col) in enumerate((("gocryptfs", "#3b6fd0"), ("passthrough", "#999"))):
        ratio = med[(j, "cmkfs")] / med[(j, t)] if med[(j, t)] else 0
        w = (W - left - 60) * ratio / scale
        svg.append(f'<rect x="{left}" y="{y+k*bar}" width="{w:.0f}" height="{bar-1}" fill="{col}"/>')
        svg.append(f'<text x="{left+w+4:.0f}" y="{y+k*bar+10}">{ratio:.2f}x</text>')
svg.append("</svg>")
open(os.path.join(out, "chart.svg"), "w").write("\n".join(svg))
print(f"\nwrote {out}/table.md and {out}/chart.svg")
PY
