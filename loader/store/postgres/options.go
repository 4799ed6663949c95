package postgres

// An Option configures [Open].
type Option interface{ apply(*config) }

type optionFunc func(*config)

func (f optionFunc) apply(c *config) { f(c) }

type config struct {
	groupEvents int // events one group transaction may hold; 0: none
	committers  int // group transactions at once; 0: GOMAXPROCS
}

// defaultGroupEvents is 16 batches of 1,000 events: past that, a bigger
// transaction saves nothing measurable and holds its first callers longer.
const defaultGroupEvents = 16384

// WithGroupCommit sets how many events one transaction may hold when
// concurrent Store calls are committed together. It overrides the default
// of 16,384; a batch larger than that is still committed, alone, and 0
// commits every batch in a transaction of its own.
//
// Grouping changes no promise: Store returns nil only once the
// transaction holding its batch committed, a batch is stored whole or not
// at all, and a batch whose ctx ends before its group commits is left out
// of it (the group is rolled back and written again without it). A group
// that fails for any other reason is stored again one batch per
// transaction, so that one batch cannot fail the others.
func WithGroupCommit(maxEvents int) Option {
	return optionFunc(func(c *config) { c.groupEvents = maxEvents })
}

// WithCommitters sets how many group transactions may run at once. The
// default, 0, is GOMAXPROCS; it is never more than the pool's connections
// (pool_max_conns in the DSN). Batches that arrive while every committer
// is busy are queued for the next group, so fewer committers make bigger
// groups and fewer transactions. With 16 clients and 16 connections on 2
// cores (loader and server on one machine, durable settings), one
// committer per connection made groups of 1 to 3 batches and stored a
// median 93 k events/s against 162 k with one transaction per batch in
// the same runs; GOMAXPROCS committers (2) stored 304 k against 203 k in
// later runs (docs/loader-benchmarks.md).
func WithCommitters(n int) Option {
	return optionFunc(func(c *config) { c.committers = n })
}
