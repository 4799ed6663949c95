// Package coretest holds the root package's tests that need modules a
// service importing batchproc should not get in its module graph: the
// rapid model test, and the Add benchmarks with OpenTelemetry's
// BatchProcessor as a peer. It is a module of its own for that reason.
//
//	go test -run '^$' -bench 'Add$|AddParallel' -benchmem -count 8 ./internal/coretest
package coretest
