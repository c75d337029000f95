# Shared by bench/start-stop.sh and bench/nic.sh (sourced): the build's paths, the -n/-o
# options, and the recording and statistics helpers over $T/data/<case>.<metric> files.
# shellcheck shell=bash
here=$(cd "$(dirname "${BASH_SOURCE[1]}")" && pwd)
top=$(cd "$here/.." && pwd)
build=${LODGE_BUILD_DIR:-$top/build}
SUP=$build/lodge-supervisor
TEST_INIT=$build/tests/test-init
MKROOTFS=$top/tests/fixtures/make-busybox-rootfs.sh

runs=10
resdir=$here/results
usage() { echo "usage: $0 [-n RUNS] [-o RESULTS_DIR]" >&2; exit 2; }
while getopts "n:o:h" opt; do
    case $opt in
    n) runs=$OPTARG ;;
    o) resdir=$OPTARG ;;
    *) usage ;;
    esac
done
[[ $runs =~ ^[1-9][0-9]*$ ]] || usage

die() { echo "$(basename "$0"): $*" >&2; exit 1; }
[[ $EUID -eq 0 ]] || die "must run as root"
for f in "$SUP" "$TEST_INIT"; do [[ -x $f ]] || die "$f missing (build first)"; done

rec() { echo "$3" >>"$T/data/$1.$2"; }
# stats FILE DIV [FMT] -> "min median max", each divided by DIV
stats() {
    [[ -s $1 ]] || { echo "- - -"; return; }
    sort -n "$1" | awk -v d="$2" -v f="${3:-%.6g}" '{v[NR] = $1}
        END {
            m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
            printf f " " f " " f "\n", v[1] / d, m / d, v[NR] / d
        }'
}
