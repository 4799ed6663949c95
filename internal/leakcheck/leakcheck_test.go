package leakcheck

import (
	"strings"
	"testing"
)

func TestMain(m *testing.M) { VerifyTestMain(m) }

// Find sees a goroutine left blocked, and not once it has ended.
func TestFind(t *testing.T) {
	stop := make(chan struct{})
	started := make(chan struct{})
	go func() {
		close(started)
		<-stop
	}()
	<-started
	if got := Find(); !strings.Contains(got, "leakcheck.TestFind.func1") {
		t.Fatalf("a blocked goroutine not found; Find returned:\n%s", got)
	}
	close(stop)
	if got := wait(5e9); got != "" {
		t.Fatalf("an ended goroutine still reported:\n%s", got)
	}
}
