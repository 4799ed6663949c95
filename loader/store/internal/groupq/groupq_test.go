package groupq

import (
	"context"
	"slices"
	"sync"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type req struct {
	Waiter
	name string
}

func (r *req) GroupWaiter() *Waiter { return &r.Waiter }

func newReq(ctx context.Context, name string, events int) *req {
	r := &req{name: name}
	r.Init(ctx, events)
	return r
}

// recorder is a lead that answers every request and records the groups.
type recorder struct {
	mu     sync.Mutex
	groups [][]string
}

func (rc *recorder) lead(group []*req) {
	var names []string
	for _, r := range group {
		names = append(names, r.name)
	}
	rc.mu.Lock()
	rc.groups = append(rc.groups, names)
	rc.mu.Unlock()
	for _, r := range group {
		r.Answer()
	}
}

// queueUp submits reqs in order while the leaders are held, each queued
// before the next, and returns the channels their Submit results arrive on.
func queueUp(t *testing.T, q *Queue[*req], budget int, rc *recorder, reqs ...*req) []chan bool {
	t.Helper()
	queued := make(chan int, len(reqs))
	q.OnQueued = func(n int) { queued <- n }
	res := make([]chan bool, len(reqs))
	for i, r := range reqs {
		res[i] = make(chan bool, 1)
		go func() { res[i] <- q.Submit(r, budget, rc.lead, nil) }()
		for n := range queued {
			if n == i+1 {
				break
			}
		}
	}
	return res
}

// TestGroups: requests queued while the leaders are busy are taken as one
// group, up to the event budget (at least one request), in queue order;
// a caller whose ctx ends while queued withdraws (Submit false) and is in
// no group.
func TestGroups(t *testing.T) {
	q := New[*req](1)
	rc := &recorder{}
	release := q.Hold()
	ctx := context.Background()
	cctx, cancel := context.WithCancel(ctx)
	reqs := []*req{
		newReq(ctx, "a", 3), newReq(cctx, "w", 1), newReq(ctx, "b", 4),
		newReq(ctx, "c", 4), newReq(ctx, "big", 20),
	}
	res := queueUp(t, q, 8, rc, reqs...)
	cancel()
	if <-res[1] {
		t.Error("a request cancelled while queued was answered, not withdrawn")
	}
	release()
	for i, ch := range res {
		if i != 1 && !<-ch {
			t.Errorf("request %s withdrawn, want answered", reqs[i].name)
		}
	}
	// a+b (7 events) fill the budget of 8; c starts the next group, big
	// (over the budget alone) one of its own.
	want := [][]string{{"a", "b"}, {"c"}, {"big"}}
	if !slices.EqualFunc(rc.groups, want, slices.Equal) {
		t.Errorf("groups %v, want %v", rc.groups, want)
	}
}

// TestTakenWaitsForAnswer: once a leader took a request, its caller's ctx
// ending does not make Submit return before the answer.
func TestTakenWaitsForAnswer(t *testing.T) {
	q := New[*req](1)
	ctx, cancel := context.WithCancel(context.Background())
	r := newReq(ctx, "r", 1)
	inLead, answer := make(chan struct{}), make(chan struct{})
	done := make(chan bool, 1)
	go func() {
		done <- q.Submit(r, 10, func(group []*req) {
			close(inLead)
			<-answer
			for _, r := range group {
				r.Answer()
			}
		}, nil)
	}()
	<-inLead
	cancel()
	select {
	case <-done:
		t.Fatal("Submit returned while its request was being written")
	default:
	}
	close(answer)
	if !<-done {
		t.Error("Submit of a taken request reported a withdrawal")
	}
}

// TestLeaders: with n leader slots, n groups are written at once; after
// runs once per group, after the slot is released.
func TestLeaders(t *testing.T) {
	const n = 3
	q := New[*req](n)
	if q.Leaders() != n {
		t.Fatalf("Leaders() = %d", q.Leaders())
	}
	var wg sync.WaitGroup
	inside, proceed := make(chan struct{}), make(chan struct{})
	var afters sync.WaitGroup
	afters.Add(n)
	for range n {
		r := newReq(context.Background(), "r", 1)
		wg.Go(func() {
			// A budget of 1 event: one request per group, so the n
			// requests make n groups, each led by a different caller.
			q.Submit(r, 1, func(group []*req) {
				inside <- struct{}{}
				<-proceed
				for _, r := range group {
					r.Answer()
				}
			}, afters.Done)
		})
	}
	for range n {
		<-inside // all n leaders in lead at once
	}
	close(proceed)
	wg.Wait()
	afters.Wait()
	if New[*req](0).Leaders() != 1 {
		t.Error("New(0) has no leader slot")
	}
}
