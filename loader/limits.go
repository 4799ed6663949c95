package loader

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"

	"golang.org/x/sync/semaphore"
)

// The loader bounds what hostile or slow clients can hold:
//
//   - A request body is read in full, as sent, before the request takes an
//     ingest slot ([Server.receive]): a client that trickles its body holds
//     a connection and the bytes it sent, never a slot. The bytes of the
//     bodies being received or held are bounded across all requests by
//     [Config.BodyMemory]; a request that would go over is answered 429.
//   - With its body received, a request waits up to [Config.SlotWait] for
//     a slot, then is answered 429 (a burst queues briefly instead of being
//     refused at once).
//   - Decompressed bodies are bounded across all requests by
//     [Config.DecodeMemory] ([Server.decompress]): a request that cannot
//     grow its buffer within the budget gives its memory back, finds the
//     decoded size by decoding into a small scratch buffer (a bomb is cut
//     off at MaxDecodedBody there and answered 413), then waits for exactly
//     that much budget and decodes again. Only a request holding no budget
//     waits for it, so the wait always ends.

// errBudget is returned by readLimited when the memory budget cannot hold
// a bigger buffer.
var errBudget = errors.New("memory budget exhausted")

// errBudgetProbe is errBudget found with one byte read past buf, into the
// probe.
var errBudgetProbe = fmt.Errorf("%w, one byte read ahead", errBudget)

// budget is a byte budget shared by all requests.
type budget struct {
	sem  *semaphore.Weighted
	size int64
}

func newBudget(size int64) *budget { return &budget{sem: semaphore.NewWeighted(size), size: size} }

// claim returns buf for reuse if it is not much bigger than want bytes and
// the budget holds its capacity (then *held is that capacity), else nil.
func (b *budget) claim(buf []byte, held *int64, want int64) []byte {
	c := int64(cap(buf))
	if c == 0 || c > max(2*want, minBodyBuf) || !b.sem.TryAcquire(c) {
		return nil
	}
	*held = c
	return buf[:0]
}

// release gives back the *held bytes.
func (b *budget) release(held *int64) {
	if *held > 0 {
		b.sem.Release(*held)
		*held = 0
	}
}

// minBodyBuf is the smallest buffer a body is read into: a client has to
// send this much before its buffer (and what it holds of the budget) grows.
const minBodyBuf = 64 << 10

// readLimited appends all of r to buf, growing it to what the body needs
// (sizeHint when known) but never past limit bytes: a longer body is
// errDecodedTooLarge, found after reading limit+1 bytes, so memory stays
// bounded whatever the body expands to. Every growth takes the new
// capacity from mem first (old and new buffers coexist during the copy)
// and gives back the old one; *held is what buf holds of mem. When mem
// cannot grant a growth, readLimited returns errBudget with what it read.
func readLimited(buf []byte, held *int64, mem *budget, r io.Reader, sizeHint, limit int64, probe []byte) ([]byte, error) {
	return readGrowing(buf, held, mem, r, sizeHint, limit, limit, probe)
}

// readGrowing is readLimited with buf growing to maxCap bytes at most: a
// bigger body is errBudget too.
func readGrowing(buf []byte, held *int64, mem *budget, r io.Reader, sizeHint, limit, maxCap int64, probe []byte) ([]byte, error) {
	grow := func(newCap int64, extra []byte) bool {
		if newCap > maxCap || !mem.sem.TryAcquire(newCap) {
			return false
		}
		nb := make([]byte, len(buf), newCap)
		copy(nb, buf)
		buf = append(nb, extra...)
		mem.release(held)
		*held = newCap
		return true
	}
	if want := min(max(sizeHint, 0), limit); int64(cap(buf)) < want {
		if !grow(want, nil) {
			return buf, errBudget
		}
	}
	for {
		if len(buf) == cap(buf) {
			// Full: one more byte tells EOF from a bigger body, without
			// growing a buffer that was exactly right.
			n, err := io.ReadFull(r, probe)
			if n == 0 {
				if err == io.EOF {
					return buf, nil
				}
				if err != nil {
					return buf, err
				}
			}
			if int64(len(buf)) >= limit {
				return buf, errDecodedTooLarge
			}
			if !grow(min(max(2*int64(cap(buf)), minBodyBuf), limit), probe[:1]) {
				return buf, errBudgetProbe
			}
			continue
		}
		n, err := r.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err == io.EOF {
			return buf, nil
		}
		if err != nil {
			return buf, err
		}
	}
}

// countRest reads r to its end into scratch and returns how many bytes it
// read, or errDecodedTooLarge as soon as that is over limit.
func countRest(r io.Reader, scratch []byte, limit int64) (int64, error) {
	var n int64
	for {
		m, err := r.Read(scratch)
		n += int64(m)
		if n > limit {
			return n, errDecodedTooLarge
		}
		if err == io.EOF {
			return n, nil
		}
		if err != nil {
			return n, err
		}
	}
}

// takeSlot takes an ingest slot for r, waiting up to Config.SlotWait for
// one. It returns 0 with the slot taken, or the status to answer: 429 when
// none came free in time, 503 when Shutdown began meanwhile, 499 (nothing
// is answered) when the client went away.
func (s *Server) takeSlot(r *http.Request) (code int, msg string) {
	select {
	case s.slots <- struct{}{}:
		return 0, ""
	default:
	}
	if s.onSlotWait != nil {
		s.onSlotWait()
	}
	t := time.NewTimer(s.cfg.SlotWait)
	defer t.Stop()
	select {
	case s.slots <- struct{}{}:
		return 0, ""
	case <-t.C:
		return http.StatusTooManyRequests, "overloaded: all " + strconv.Itoa(cap(s.slots)) +
			" ingest slots stayed busy for " + s.cfg.SlotWait.String()
	case <-s.drainCh:
		return http.StatusServiceUnavailable, "shutting down"
	case <-r.Context().Done():
		return statusClientGone, "client went away while waiting for an ingest slot"
	}
}

// statusClientGone is nginx's 499: the client closed the connection before
// the answer. It is only counted, never written to a live client.
const statusClientGone = 499
