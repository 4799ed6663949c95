package spool

import "github.com/batchproc/batchproc"

// Journal is the interface the processor writes through ([batchproc.WithJournal]);
// *[Spool] implements it, and [batchproc.JournalDropper] for WithDropOldest.
type Journal = batchproc.Journal

var (
	_ batchproc.JournalDropper = (*Spool)(nil)
	_ batchproc.JournalWriter  = (*Spool)(nil)
)

// WithSpool is the processor option that journals every batch in a spool in
// dir, opened by [batchproc.New] with opts ([Open]'s options):
//
//	p, err := batchproc.New(sink, spool.WithSpool("/var/lib/myservice/spool"))
//
// New fails if the spool cannot be opened (another process holds the
// directory, say); the processor closes it at the end of Shutdown. What a
// batch in the spool survives is its sync mode's promise (the package
// documentation has the table); [batchproc.WithJournal] has what the
// processor does with a journal. The spool keeps the batches still being
// filled too ([WithOpenBatches]), so a crash of the process loses no event
// whose Add returned nil.
//
// With WithDropOldest, a batch dropped to make room counts as failed in the
// processor's Stats and goes to its failure callback with
// [batchproc.ErrDropped]; the option's own function, which may be nil, is
// called first.
func WithSpool(dir string, opts ...Option) batchproc.Option {
	return batchproc.WithJournal(func() (batchproc.Journal, error) {
		s, err := Open(dir, opts...)
		if err != nil {
			return nil, err
		}
		return s, nil
	})
}

// Of returns the spool the processor p writes through ([WithSpool], or a
// *Spool given to [batchproc.WithJournal]), or nil if p has none: a
// service reads its [Spool.Stats] through it, and the metrics adapters
// (spoolprom, spoolotel) bind to it. The processor owns the spool: it
// closes it at the end of Shutdown; Stats stays readable after that.
func Of(p *batchproc.Processor) *Spool {
	s, _ := p.Journal().(*Spool)
	return s
}
