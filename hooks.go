package batchproc

import "time"

// A Hook observes a processor: any value that implements one or more of
// the hook interfaces below ([SendHook], [FailureHook], [RejectHook],
// [LimitHook]). New hook interfaces can be added without breaking existing
// hooks (the pattern of franz-go's kgo.Hook). Hooks are called
// synchronously from the processor's goroutines (RejectHook from the Add
// caller's): they must be quick and must not block; they may read
// [Processor.Stats]. Metrics adapters live in their own packages (see the
// README). A processor with no hooks pays nothing for them on the Add path.
type Hook any

// NewHook is told the processor it was given to, when [New] has built it
// and before New returns: a metrics adapter binds itself to the processor's
// Stats there, so it cannot be bound to another.
type NewHook interface {
	OnNew(*Processor)
}

// SendHook is told about every Send attempt when it returns.
type SendHook interface {
	OnSend(SendInfo)
}

// SendInfo describes one Send attempt.
type SendInfo struct {
	Key      string        // the batch's idempotency key
	Events   int           // events in the batch
	Bytes    int           // len(NDJSON())
	Attempt  int           // 1 for the first send of the batch
	Duration time.Duration // how long Send took
	Outcome  SendOutcome
	Err      error // what Send returned; nil when delivered
}

// SendOutcome says what became of a Send attempt.
type SendOutcome string

const (
	SendDelivered SendOutcome = "delivered" // the sink accepted the batch
	SendRetrying  SendOutcome = "retrying"  // it failed and will be retried
	SendFailed    SendOutcome = "failed"    // it failed for good: permanent, or retries ran out
	SendAborted   SendOutcome = "aborted"   // Shutdown's context ended
)

// FailureHook is told about every batch that failed, as the failure
// callback is ([WithOnFailure]), after it was counted in Stats.Failed.
type FailureHook interface {
	OnBatchFailed(FailureInfo)
}

// FailureInfo describes a failed batch (or the failed rest of one whose
// prefix was delivered).
type FailureInfo struct {
	Key      string
	Events   int   // events that failed
	Attempts int   // sends made (0 if Shutdown ended before the first)
	Err      error // why: a Permanent error, a [*GiveUpError] or a [*ShutdownError]
}

// RejectHook is told about every Add or TryAdd that was refused, with the
// error it returned ([ErrFull], [ErrClosed], [ErrEventTooLarge],
// [ErrInvalidEvent], or the context's error): events the service meant to
// send and the processor did not take.
type RejectHook interface {
	OnReject(err error)
}

// LimitHook is told when async dispatch's send limit changes (see
// [WithAdaptiveInFlight]), with the reason ("slow start", "grow",
// "latency", "overload", "timeout", "error", "budget", and "capacity" when
// slow start stopped at the count the sink reported with [ReportCapacity]).
type LimitHook interface {
	OnLimitChange(from, to int, reason string)
}

// WithHooks adds hooks to the processor, in addition to those of earlier
// WithHooks options. A nil hook, or one implementing no hook interface, is
// an error.
func WithHooks(hooks ...Hook) Option {
	return optionFunc(func(c *config) { c.hooks = append(c.hooks, hooks...) })
}

// hookSet holds the hooks by interface, so each call site tests one slice.
type hookSet struct {
	new    []NewHook
	send   []SendHook
	fail   []FailureHook
	reject []RejectHook
	limit  []LimitHook
}

func (h *hookSet) add(x Hook) bool {
	ok := false
	if v, is := x.(NewHook); is {
		h.new, ok = append(h.new, v), true
	}
	if v, is := x.(SendHook); is {
		h.send, ok = append(h.send, v), true
	}
	if v, is := x.(FailureHook); is {
		h.fail, ok = append(h.fail, v), true
	}
	if v, is := x.(RejectHook); is {
		h.reject, ok = append(h.reject, v), true
	}
	if v, is := x.(LimitHook); is {
		h.limit, ok = append(h.limit, v), true
	}
	return ok
}

func (p *Processor) onReject(err error) {
	for _, h := range p.hooks.reject {
		h.OnReject(err)
	}
}
