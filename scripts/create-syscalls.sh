#!/usr/bin/env bash
# Counts the mount daemon's syscalls (strace -c) while 1,000 empty files (mode 0644) and 200
# directories are created through the mount, for two cmkfs binaries: a deterministic A/B of the
# metadata path where timings on this shared machine are too noisy.
#   usage: sudo scripts/create-syscalls.sh OLD_BINARY NEW_BINARY
set -euo pipefail
[ $# = 2 ] || { echo "usage: $0 OLD_BINARY NEW_BINARY" >&2; exit 2; }
command -v strace >/dev/null || apt-get install -y -qq strace >/dev/null
D=$(mktemp -d /var/tmp/cmkfs-syscalls.XXXXXX)
trap 'for m in "$D"/*/mnt; do mountpoint -q "$m" && umount -l "$m"; done; rm -rf "$D"' EXIT
export CMKFS_CONFIG_DIR=$D/config CMKFS_AUDIT_LOG=$D/audit.jsonl
umask 022
for t in old new; do
  B=$1; [ $t = new ] && B=$2
  d=$D/$t; mkdir -p "$d/mnt"
  uri=$("$B" key create --store "$d/keys" k --bits 2048 | tail -n1)
  "$B" init --kek "$uri" "$d/c" >/dev/null
  "$B" mount --log-file "$d/log" "$d/c" "$d/mnt" 2>/dev/null
  pid=$("$B" status --json "$d/mnt" | python3 -c 'import json,sys; print(json.load(sys.stdin)["pid"])')
  strace -c -f -p "$pid" -o "$d/strace.txt" 2>/dev/null & sp=$!
  sleep 1
  ( cd "$d/mnt"; for i in $(seq 1000); do : > "f$i"; done; for i in $(seq 200); do mkdir "d$i"; done )
  sleep 0.5; kill -INT $sp; wait $sp 2>/dev/null || true
  echo "== $t ($B)"
  grep -E "calls|openat|newfstatat|chmod|total" "$d/strace.txt"
  "$B" umount "$d/mnt"
done
