package batchproc

import (
	"strconv"
	"testing"
)

// deep calls f under n more frames.
//
//go:noinline
func deep(n int, f func()) {
	if n <= 0 {
		f()
		return
	}
	deep(n-1, f)
}

// on runs f on a new goroutine started in start, and waits for it.
func on(start func(func()), f func()) {
	done := make(chan struct{})
	go start(func() { defer close(done); f() })
	<-done
}

// Two functions goroutines start in: one for callback goroutines, one
// for the rest.
//
//go:noinline
func startA(f func()) { f() }

//go:noinline
func startB(f func()) { f() }

// current tells a registered goroutine at any depth (the unwind past its
// first buffer too), and neither a goroutine started elsewhere nor an
// unregistered one started in the same function as a callback goroutine.
func TestCallbackGoroutines(t *testing.T) {
	var c callbackGoroutines
	if on(startA, func() {}); c.current() {
		t.Fatal("no goroutine registered, and the test's is taken for a callback goroutine")
	}
	registered := make(chan struct{})
	release := make(chan struct{})
	exited := make(chan struct{})
	go startA(func() {
		defer close(exited)
		id := c.enter()
		defer c.exit(id)
		for _, depth := range []int{0, 10, 200} {
			deep(depth, func() {
				if !c.current() {
					t.Errorf("a registered goroutine, %d frames down: not taken for a callback goroutine", depth)
				}
			})
		}
		close(registered)
		<-release
	})
	<-registered
	if c.current() {
		t.Error("the test's goroutine is taken for a callback goroutine")
	}
	on(startB, func() {
		if c.current() {
			t.Error("a goroutine started in another function is taken for a callback goroutine")
		}
	})
	on(startA, func() {
		if c.current() {
			t.Error("an unregistered goroutine started where the callback goroutine did is taken for one")
		}
	})
	close(release)
	<-exited
	on(startA, func() {
		if c.current() {
			t.Error("after exit, a goroutine started where the callback goroutine did is taken for one")
		}
	})
}

// BenchmarkCallbackCheck is the test an Add about to wait for budget makes
// (current), from a goroutine that is no callback goroutine while one is
// registered, against reading the goroutine's id as the test used to
// (goid), at stack depths like an HTTP handler's.
func BenchmarkCallbackCheck(b *testing.B) {
	var c callbackGoroutines
	release := make(chan struct{})
	registered := make(chan struct{})
	go startA(func() {
		id := c.enter()
		defer c.exit(id)
		close(registered)
		<-release
	})
	<-registered
	defer close(release)
	for _, depth := range []int{4, 14, 30} {
		b.Run("depth="+strconv.Itoa(depth)+"/impl=current", func(b *testing.B) {
			deep(depth, func() {
				for b.Loop() {
					if c.current() {
						b.Fatal("taken for a callback goroutine")
					}
				}
			})
		})
		b.Run("depth="+strconv.Itoa(depth)+"/impl=goid", func(b *testing.B) {
			deep(depth, func() {
				for b.Loop() {
					if goid() == 0 {
						b.Fatal("no id")
					}
				}
			})
		})
	}
}
