package bench

import (
	"os"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	if IsChild() { // the isolated runs of this package's tests
		os.Exit(ChildMain())
	}
	goleak.VerifyTestMain(m)
}
