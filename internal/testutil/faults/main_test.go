package faults

import (
	"testing"

	"github.com/batchproc/batchproc/internal/leakcheck"
)

// The root module keeps to the standard library, tests included:
// leakcheck is its goleak.
func TestMain(m *testing.M) { leakcheck.VerifyTestMain(m) }
