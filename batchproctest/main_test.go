package batchproctest_test

import (
	"testing"

	"github.com/batchproc/batchproc/internal/leakcheck"
)

func TestMain(m *testing.M) { leakcheck.VerifyTestMain(m) }
