package storetest_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/batchproc/batchproc/loader/store"
	"github.com/batchproc/batchproc/loader/store/storetest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestDiscard runs the suite against store.Discard, which keeps no rows and
// so is checked through the store.Store interface only.
func TestDiscard(t *testing.T) {
	storetest.Run(t, func(*testing.T) store.Store { return store.NewDiscard() })
}

// TestMemStore runs the suite, Reader checks included, against a correct
// in-memory store.
func TestMemStore(t *testing.T) {
	storetest.Run(t, func(*testing.T) store.Store { return newMem(flaw("")) })
}

// flaw names one way newMem breaks the store contract; "" is none.
type flaw string

// flaws maps each flaw to the subtest of the suite that must catch it.
var flaws = map[flaw]string{
	"nodedupe":     "DuplicateKey",
	"partial":      "AllOrNothing",
	"keeppayload":  "RoundTrip",
	"seconds":      "RoundTrip",
	"ignoreclose":  "StoreAfterClose",
	"ignorectx":    "CancelledBeforeStore",
	"emptykeydup":  "EmptyKeyAlwaysNew",
	"racydedupe":   "ConcurrentSameKey",
	"badcounts":    "StoreAndCount",
	"dropnul":      "AwkwardStrings",
	"rawtext":      "AwkwardStrings",
	"reorder":      "StoreAndCount",
	"lostduplicat": "DuplicateKey",
	"nodigest":     "KeyReused",
	"globalkeys":   "Namespaces",
	"nanoseconds":  "RoundTrip",
}

const flawEnv = "STORETEST_FLAW"

// TestSuiteCatchesFlaws checks that the suite fails each flawed store, in the
// subtest meant to catch the flaw. The suite reports through *testing.T, so
// each flawed run happens in a child process running this same test with
// flawEnv set.
func TestSuiteCatchesFlaws(t *testing.T) {
	if f := flaw(os.Getenv(flawEnv)); f != "" {
		// Child: run the suite against the flawed store; expected to fail.
		storetest.Run(t, func(*testing.T) store.Store { return newMem(f) })
		return
	}
	for f, sub := range flaws {
		t.Run(string(f), func(t *testing.T) {
			t.Parallel()
			cmd := exec.Command(os.Args[0], "-test.run=^TestSuiteCatchesFlaws$", "-test.v", "-test.count=1")
			cmd.Env = append(os.Environ(), flawEnv+"="+string(f))
			out, err := cmd.CombinedOutput()
			if err == nil {
				t.Fatalf("suite passed a store with flaw %q:\n%s", f, out)
			}
			if want := "--- FAIL: TestSuiteCatchesFlaws/" + sub + " "; !bytes.Contains(out, []byte(want)) {
				t.Fatalf("flaw %q: want a failure in subtest %s; output:\n%s", f, sub, out)
			}
		})
	}
}

// mem is an in-memory store.Store and storetest.Reader, optionally flawed.
type mem struct {
	flaw flaw

	mu      sync.Mutex
	keys    map[string][32]byte // digest by namespace + "\x00" + key
	batches []store.Batch
	counts  store.Counts
	closed  bool
}

func newMem(f flaw) *mem { return &mem{flaw: f, keys: make(map[string][32]byte)} }

func (m *mem) key(b *store.Batch) string {
	if m.flaw == "globalkeys" {
		return b.Key
	}
	return b.Namespace + "\x00" + b.Key
}

func (m *mem) Store(ctx context.Context, b *store.Batch) (bool, error) {
	if m.flaw != "ignorectx" {
		if err := ctx.Err(); err != nil {
			return false, err
		}
	}
	if m.flaw == "racydedupe" {
		// Check, then insert under a separate lock: two callers can both
		// see the key absent.
		m.mu.Lock()
		_, seen := m.keys[m.key(b)]
		m.mu.Unlock()
		if seen && b.Key != "" {
			m.mu.Lock()
			m.counts.Duplicates++
			m.mu.Unlock()
			return true, nil
		}
		runtime.Gosched() // let the other callers run into the window

	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed && m.flaw != "ignoreclose" {
		return false, fmt.Errorf("mem: %w", store.ErrClosed)
	}
	sum, seen := m.keys[m.key(b)]
	if (b.Key != "" || m.flaw == "emptykeydup") && seen && m.flaw != "nodedupe" && m.flaw != "racydedupe" {
		if sum != b.Digest() && m.flaw != "nodigest" && m.flaw != "globalkeys" {
			return false, store.ErrKeyReused
		}
		if m.flaw != "lostduplicat" {
			m.counts.Duplicates++
		}
		return true, nil
	}
	sb := store.Batch{Namespace: b.Namespace, Key: b.Key}
	for i, e := range b.Events {
		if m.flaw == "partial" && i == len(b.Events)/2 && ctx.Err() != nil {
			// Keeps the first half when cancelled part-way.
			m.batches = append(m.batches, sb)
			m.counts.Events += int64(len(sb.Events))
			return false, ctx.Err()
		}
		if m.flaw != "keeppayload" {
			e.Payload = bytes.Clone(e.Payload)
		}
		switch m.flaw {
		case "seconds":
			e.TS = e.TS.Truncate(time.Second)
		case "nanoseconds": // kept, not truncated to the microsecond
		default:
			e.TS, _ = store.CleanTS(e.TS)
		}
		if m.flaw != "rawtext" { // stored as given, NUL included
			e.ID, e.Type = store.CleanText(e.ID), store.CleanText(e.Type)
		}
		if m.flaw == "dropnul" {
			e.ID = strings.ReplaceAll(e.ID, "\uFFFD", "")
		}
		sb.Events = append(sb.Events, e)
	}
	if m.flaw == "reorder" && len(sb.Events) > 1 {
		sb.Events[0], sb.Events[1] = sb.Events[1], sb.Events[0]
	}
	m.keys[m.key(b)] = b.Digest()
	m.batches = append(m.batches, sb)
	m.counts.Batches++
	m.counts.Events += int64(len(b.Events))
	if m.flaw == "badcounts" {
		m.counts.Events++
	}
	return false, nil
}

func (m *mem) Batches(context.Context) ([]store.Batch, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]store.Batch, len(m.batches))
	for i, b := range m.batches {
		out[i] = store.Batch{Namespace: b.Namespace, Key: b.Key, Events: append([]store.Event(nil), b.Events...)}
	}
	return out, nil
}

func (m *mem) Ping(context.Context) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return store.ErrClosed
	}
	return nil
}

func (m *mem) Counts() store.Counts {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.counts
}

func (m *mem) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.closed = true
	return nil
}
