package batchproc_test

import (
	"os/exec"
	"strings"
	"testing"
)

// The root package must compile with the standard library only, so that a
// service importing batchproc (and httpsink) pulls in nothing else.
func TestRootImportsStandardLibraryOnly(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "-f", "{{if not .Standard}}{{.ImportPath}}{{end}}", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	for _, pkg := range strings.Fields(string(out)) {
		if pkg != "github.com/batchproc/batchproc" {
			t.Errorf("root package depends on non-standard package %s", pkg)
		}
	}
}
