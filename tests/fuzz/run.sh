#!/bin/sh
# run.sh: run libFuzzer targets on their seed corpora, one after the
# other, and fail if any of them finds something (crash, sanitizer report,
# leak, timeout, or going over the memory limits).
#
# Used by `make fuzz-smoke` (mk/fuzz.am); by hand for longer runs, from
# the build directory after `make fuzz`:
#
#	sh ../main/tests/fuzz/run.sh -t 600 gguf	# ten minutes
#
# usage: run.sh [-t SECONDS] [-b BINDIR] [-s CORPUSDIR] [-w WORKDIR]
#		[TARGET ...]
#	-t	time per target (default 20)
#	-b	where the fuzz-* binaries are (default tests/fuzz)
#	-s	the seed corpora, one directory per target (default
#		$top_srcdir/tests/corpus); never written to
#	-w	work directory (default tests/fuzz/work): WORKDIR/NAME holds
#		what the target found interesting and is kept, so later runs
#		start from it; WORKDIR/NAME.log is the run's output; crashing
#		inputs are saved as WORKDIR/NAME-crash-*, -leak-*, -timeout-*,
#		-oom-*.  Add one to the seeds to keep it as a regression.
# TARGETS default to all: frame gguf kvsnap tokenizer config.
#
# Each run prints one line: target, executions, seconds, executions per
# second, corpus size, peak RSS and OK or FAILED.

time=20
bindir=tests/fuzz
seeds=${top_srcdir:-.}/tests/corpus
work=tests/fuzz/work

while getopts t:b:s:w: opt; do
	case $opt in
	t) time=$OPTARG ;;
	b) bindir=$OPTARG ;;
	s) seeds=$OPTARG ;;
	w) work=$OPTARG ;;
	*) echo "usage: run.sh [-t SECONDS] [-b BINDIR] [-s CORPUSDIR]" \
	    "[-w WORKDIR] [TARGET ...]" >&2; exit 2 ;;
	esac
done
shift $((OPTIND - 1))
[ $# -gt 0 ] || set -- frame gguf kvsnap tokenizer config

# No BLAS threads: they would only add noise (and uninstrumented threads).
OPENBLAS_NUM_THREADS=1
export OPENBLAS_NUM_THREADS

failed=
for name in "$@"; do
	bin=$bindir/fuzz-$name
	case $name in
	frame)	corpus=$seeds/proto
		# msgpack-c only ever sees what the scanner accepted, so
		# no message may make it allocate much (proto/fuzz-frame.c).
		limits="-rss_limit_mb=512 -malloc_limit_mb=64" ;;
	*)	corpus=$seeds/$name
		limits="-rss_limit_mb=2048 -malloc_limit_mb=1024" ;;
	esac
	if [ ! -x "$bin" ]; then
		echo "run.sh: $bin is missing (make fuzz)" >&2
		failed="$failed $name"
		continue
	fi
	if [ ! -d "$corpus" ]; then
		echo "run.sh: no seeds in $corpus" >&2
		failed="$failed $name"
		continue
	fi
	mkdir -p "$work/$name" || exit 1
	log=$work/$name.log
	start=$(date +%s)
	# -timeout: one input may take 10 s; -max_len: 64 KiB covers the
	# largest seed and leaves room to grow.
	"$bin" -max_total_time="$time" -timeout=10 $limits \
	    -max_len=65536 -print_final_stats=1 \
	    -artifact_prefix="$work/$name-" "$work/$name" "$corpus" \
	    >"$log" 2>&1
	rc=$?
	secs=$(( $(date +%s) - start ))
	runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
	rss=$(sed -n 's/^stat::peak_rss_mb: *//p' "$log")
	units=$(ls "$work/$name" | wc -l)
	[ -n "$runs" ] || runs=0
	if [ $rc -eq 0 ]; then
		status=OK
	else
		status="FAILED (exit $rc, see $log)"
		failed="$failed $name"
	fi
	printf '%-16s %10s runs %5s s %8s/s corpus %5s rss %5s MB  %s\n' \
	    "fuzz-$name" "$runs" "$secs" "$(( runs / (secs > 0 ? secs : 1) ))" \
	    "$units" "${rss:-?}" "$status"
	if [ $rc -ne 0 ]; then
		grep -E 'ERROR|SUMMARY|runtime error|Test unit written|^    #[0-9]' \
		    "$log" | head -40 | sed 's/^/  /'
	fi
done
if [ -n "$failed" ]; then
	echo "run.sh: found something in:$failed" >&2
	exit 1
fi
exit 0
