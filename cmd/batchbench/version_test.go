package main

import (
	"bytes"
	"context"
	"runtime"
	"strings"
	"testing"
)

// -version prints the one version line on stdout and exits 0 without
// running the study, whatever other flags say.
func TestVersion(t *testing.T) {
	for _, args := range [][]string{{"-version"}, {"-duration", "1h", "-version"}} {
		var stdout, stderr bytes.Buffer
		if code := run(context.Background(), args, &stdout, &stderr); code != 0 {
			t.Errorf("%v: exit %d, stderr %q", args, code, stderr.String())
		}
		line := stdout.String()
		if !strings.HasPrefix(line, "batchbench ") || !strings.HasSuffix(line, " "+runtime.Version()+" "+runtime.GOOS+"/"+runtime.GOARCH+"\n") ||
			strings.Count(line, "\n") != 1 {
			t.Errorf("%v: stdout %q, want one line: batchbench <version> ... %s %s/%s", args, line, runtime.Version(), runtime.GOOS, runtime.GOARCH)
		}
		if stderr.Len() != 0 {
			t.Errorf("%v: stderr %q", args, stderr.String())
		}
	}
}
