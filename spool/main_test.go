package spool

import (
	"os"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	if os.Getenv(crashChildEnv) != "" {
		crashChild() // the child process of TestCrashKill: never returns
	}
	goleak.VerifyTestMain(m, goleak.Cleanup(func(int) {
		for _, f := range cleanups {
			f()
		}
	}))
}
