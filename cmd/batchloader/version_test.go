package main

import (
	"bytes"
	"context"
	"io"
	"runtime"
	"strings"
	"testing"
)

// -version prints the one version line on stdout and exits 0 without
// opening a store or listening, whatever other flags say.
func TestVersion(t *testing.T) {
	for _, args := range [][]string{{"-version"}, {"-store", "postgres", "-dsn", "postgres://nowhere.invalid/db", "-version"}} {
		var stdout, stderr bytes.Buffer
		err := run(context.Background(), args, &stdout, &stderr)
		if code := exitCode(err, io.Discard); code != 0 {
			t.Errorf("%v: exit %d (%v)", args, code, err)
		}
		line := stdout.String()
		if !strings.HasPrefix(line, "batchloader ") || !strings.HasSuffix(line, " "+runtime.Version()+" "+runtime.GOOS+"/"+runtime.GOARCH+"\n") ||
			strings.Count(line, "\n") != 1 {
			t.Errorf("%v: stdout %q, want one line: batchloader <version> ... %s %s/%s", args, line, runtime.Version(), runtime.GOOS, runtime.GOARCH)
		}
		if stderr.Len() != 0 {
			t.Errorf("%v: stderr %q", args, stderr.String())
		}
	}
}
