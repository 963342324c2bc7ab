// Package openshift holds the `make bench` figures of the openshift source
// (issue 6), measured against a real API server (test/cluster) and a real
// registry (test/registry). Those helpers need a testing.TB, so the
// figures are a test, TestOpenShiftBench, which skips unless
// EXPLODEFS_BENCH_BIN names the daemon binary: `make unit` compiles it and
// runs nothing heavy. `make bench` runs it after the oci-dir figures:
//
//	EXPLODEFS_BENCH_BIN=$PWD/bin/explodefs go test -count=1 -v -timeout 30m \
//	    -run '^TestOpenShiftBench$' ./test/bench/openshift/
//
// Like test/bench, every goal is a ratio to a baseline measured in the same
// run, or a latency, because absolute times on a shared machine are noise.
package openshift
