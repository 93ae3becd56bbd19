#!/bin/sh
# Turns a 'git describe' version into a Debian version:
#   v1.2.3            -> 1.2.3
#   v1.2.3-4-gabc1234 -> 1.2.3+4.gabc1234
#   abc1234[-dirty]   -> 0.0~git<commit time>.abc1234[.dirty]   (no tag yet)
# Usage: version.sh VERSION [COMMIT_EPOCH]
set -eu
v=${1:-dev}
epoch=${2:-0}
v=${v#v}
case "$v" in
[0-9]*.[0-9]*)
	printf '%s\n' "$v" | sed -e 's/-\([0-9][0-9]*\)-g/+\1.g/' -e 's/-/./g'
	;;
*)
	stamp=$(date -u -d "@$epoch" +%Y%m%d%H%M%S)
	printf '0.0~git%s.%s\n' "$stamp" "$(printf '%s' "$v" | sed 's/-/./g')"
	;;
esac
