package kafkasink

import (
	"context"
	"errors"
	"fmt"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
)

// ProduceError is a batch that Kafka did not acknowledge in full. Send
// returns it wrapped in the classification the processor acts on (see
// [Sink.Send]); find it with errors.As, and the broker's error under it:
//
//	var pe *kafkasink.ProduceError
//	if errors.As(err, &pe) && errors.Is(pe, kerr.MessageTooLarge) { ... }
type ProduceError struct {
	// Key is the batch's key, or after a split of a batch too large for one
	// record, the derived key of the part that failed ("<key>.1.0").
	Key string
	// Failed is the number of records Kafka did not acknowledge, of
	// Records produced for the batch (or part).
	Failed, Records int
	// Err is the first failed record's error: a *kerr.Error from the
	// broker (kerr.MessageTooLarge, kerr.TopicAuthorizationFailed, ...),
	// kgo.ErrRecordTimeout, a network error, or context.DeadlineExceeded
	// when [WithTimeout] ran out.
	Err error

	permanent bool
}

func (e *ProduceError) Error() string {
	what := "not acknowledged"
	if errors.Is(e.Err, context.DeadlineExceeded) {
		what = "not acknowledged in time"
	}
	return fmt.Sprintf("kafkasink: batch %s: %d of %d records %s: %v", e.Key, e.Failed, e.Records, what, e.Err)
}

func (e *ProduceError) Unwrap() error { return e.Err }

// isPermanent reports whether a record error will come back the same on a
// retry of the batch. kgo already retries what Kafka calls retriable, so a
// broker error reaching a promise is final unless kgo's own producer state
// was at fault (it resets that state before the next record). A topic that
// kgo still does not know after its UnknownTopicRetries does not exist:
// a configuration error. A closed client never produces again.
func isPermanent(err error) bool {
	if errors.Is(err, kgo.ErrClientClosed) {
		return true
	}
	var ke *kerr.Error
	if !errors.As(err, &ke) {
		return false // network, timeouts, context: retryable
	}
	switch ke {
	case kerr.UnknownTopicOrPartition, kerr.UnknownTopicID:
		return true
	case kerr.OutOfOrderSequenceNumber, kerr.UnknownProducerID, kerr.InvalidProducerEpoch, kerr.InvalidProducerIDMapping:
		return false
	}
	return !ke.Retriable
}

// isTooLarge reports whether err says a record or record batch is larger
// than the client's or the broker's limit.
func isTooLarge(err error) bool {
	return errors.Is(err, kerr.MessageTooLarge) || errors.Is(err, kerr.RecordListTooLarge)
}
