package httpsink

import (
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// StatusError is a response of the Batch Loader other than a 200 with a
// well-formed body. Send returns it wrapped in the classification the
// processor acts on (see [Sink.Send]); find it with errors.As:
//
//	var se *httpsink.StatusError
//	if errors.As(err, &se) && se.Code == http.StatusBadRequest { ... }
type StatusError struct {
	// Code is the HTTP status code. It is 200 for a 200 whose body broke the
	// protocol (not JSON, or an accepted count other than the batch's).
	Code int
	// Message is the body's "error" field, or for a body that is not the
	// protocol's JSON, the start of the body as text.
	Message string
	// Line is the body's "line" field: the 1-based line (event) of the
	// request that the loader rejected, 0 when absent. After a 413 split it
	// counts within the part named by Key.
	Line int
	// RetryAfter is the wait the Retry-After header asked for, 0 when it was
	// absent or unusable.
	RetryAfter time.Duration
	// Key is the Idempotency-Key of the request: the batch's, or after a
	// 413 split, the derived key of the part that failed ("<key>.1.0").
	Key string

	retryAfterSet bool // a usable Retry-After header came with the response
}

func (e *StatusError) Error() string {
	var b strings.Builder
	b.WriteString("httpsink: batch ")
	b.WriteString(e.Key)
	b.WriteString(": ")
	b.WriteString(strconv.Itoa(e.Code))
	if t := http.StatusText(e.Code); t != "" {
		b.WriteByte(' ')
		b.WriteString(t)
	}
	if e.Message != "" {
		b.WriteString(": ")
		b.WriteString(e.Message)
	}
	if e.Line > 0 {
		fmt.Fprintf(&b, " (line %d)", e.Line)
	}
	if e.RetryAfter > 0 {
		fmt.Fprintf(&b, " (retry after %v)", e.RetryAfter)
	}
	return b.String()
}

// PartialError is what [Sink.Send] returns when a batch split after a 413
// was stored in part: the parts before the failing one were acknowledged.
// Parts are sent in order and the first failure ends the send, so the
// stored events are exactly b.Event(0) to b.Event(Stored-1). Err is the
// failing part's error, already classified: a PartialError is retryable or
// permanent as Err is (errors.As sees through it). Send returns it wrapped
// by [batchproc.Partial].
type PartialError struct {
	Key    string // the batch's key
	Stored int    // events stored, a prefix of the batch
	Len    int    // events in the batch
	Err    error
}

func (e *PartialError) Error() string {
	return fmt.Sprintf("httpsink: batch %s split after 413: %d of %d events stored before a part failed: %v", e.Key, e.Stored, e.Len, e.Err)
}

func (e *PartialError) Unwrap() error { return e.Err }

// maxRetryAfter caps a Retry-After value: far beyond any retry policy's
// patience, yet far from overflowing a time.Duration sum.
const maxRetryAfter = 24 * time.Hour

// parseRetryAfter reads a Retry-After header: delta-seconds or an HTTP
// date. ok is false when the header is absent, unparsable or negative. A
// date in the past means "now" (0, true); a value past 24 h is cut to 24 h.
func parseRetryAfter(v string, now time.Time) (d time.Duration, ok bool) {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0, false
	}
	if v[0] >= '0' && v[0] <= '9' {
		for i := 1; i < len(v); i++ {
			if v[i] < '0' || v[i] > '9' {
				return 0, false
			}
		}
		secs, err := strconv.ParseUint(v, 10, 64)
		if err != nil || secs > uint64(maxRetryAfter/time.Second) {
			return maxRetryAfter, true // only ErrRange is possible here
		}
		return time.Duration(secs) * time.Second, true
	}
	t, err := http.ParseTime(v)
	if err != nil {
		return 0, false
	}
	return min(max(t.Sub(now), 0), maxRetryAfter), true
}

// retryableStatus reports whether a response status is worth a retry of the
// same request, as protocol.md's client rule says: 408 (the loader did not
// receive the body in time: a slow link, not a bad batch), 429 and every
// 5xx. Any other status is permanent.
func retryableStatus(code int) bool {
	return code == http.StatusRequestTimeout || code == http.StatusTooManyRequests ||
		(code >= 500 && code <= 599)
}
