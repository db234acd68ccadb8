#!/bin/bash
# list-checks.sh - the table of guest checks in docs/guests.md, generated from tests/*.sh.
#   list-checks.sh             print the table (markdown)
#   list-checks.sh --check F   exit 1 if F's table (between the checks:begin/end markers) differs
#   list-checks.sh --update F  rewrite F's table
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
table() {
  echo "| test | check | gap tag |"
  echo "|---|---|---|"
  for f in "$HERE"/tests/*.sh; do
    t=$(basename "$f" .sh)
    # check_eq/check_re/check_rc [-g TAG] "WHAT" ...; result TAG "WHAT" ...; fio_verify
    sed -n -E \
      -e 's/^[[:space:]]*(check_eq|check_re|check_rc)[[:space:]]+-g[[:space:]]+([a-z0-9-]+)[[:space:]]+"([^"]*)".*/\2\x1f\3/p' \
      -e 's/^[[:space:]]*(check_eq|check_re|check_rc)[[:space:]]+"([^"]*)".*/\x1f\2/p' \
      -e 's/^[[:space:]]*result[[:space:]]+([a-z0-9-]+)[[:space:]]+"([^"]*)".*/\1\x1f\2/p' \
      -e 's/^[[:space:]]*fio_verify .*/\x1ffio randwrite 4 KiB QD16, 2 jobs on 2 CPUs, --verify=crc32c/p' "$f" |
    sed -E 's/ \([^)]*\$[^)]*\)//; s/\$op/XX/g' |
    while IFS=$'\x1f' read -r gap what; do
      what=${what//|/\\|}
      echo "| $t | $what | ${gap:+\`$gap\`} |"
    done
  done
}
case ${1:-} in
  --check|--update)
    f=$2
    cur=$(sed -n '/<!-- checks:begin -->/,/<!-- checks:end -->/p' "$f" | sed '1d;$d')
    new=$(table)
    if [ "$1" = --check ]; then
      [ "$cur" = "$new" ] || { echo "$f: checks table out of date (run $0 --update $f)" >&2; exit 1; }
      echo "$f: checks table up to date"
    else
      awk -v tbl="$new" '/<!-- checks:begin -->/ { print; print tbl; skip = 1; next }
                         /<!-- checks:end -->/ { skip = 0 } !skip' "$f" > "$f.tmp" && mv "$f.tmp" "$f"
    fi;;
  "") table;;
  *) sed -n '2,5p' "$0"; exit 2;;
esac
