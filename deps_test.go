package batchproc_test

import (
	"os"
	"os/exec"
	"path/filepath"
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

// A service that imports batchproc and httpsink has, in its module graph,
// those two packages' module and its one dependency, klauspost/compress:
// not the loader's, the bench's or the tests' modules (SQLite, pgx,
// Prometheus, gonum, OpenTelemetry, goleak, rapid). One that imports
// kafkasink adds franz-go's modules. The test builds such adopters against
// this checkout (replace), tidies them and reads `go list -m all`.
func TestAdopterModuleGraph(t *testing.T) {
	if testing.Short() {
		t.Skip("builds two modules with the go command")
	}
	root, err := filepath.Abs(".")
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name     string
		imports  []string
		replaces map[string]string
		allowed  func(mod string) bool
	}{
		{"batchproc+httpsink", []string{"github.com/batchproc/batchproc", "github.com/batchproc/batchproc/httpsink"},
			map[string]string{"github.com/batchproc/batchproc": root},
			func(m string) bool {
				return m == "github.com/batchproc/batchproc" || m == "github.com/klauspost/compress"
			}},
		{"kafkasink", []string{"github.com/batchproc/batchproc", "github.com/batchproc/batchproc/kafkasink"},
			map[string]string{"github.com/batchproc/batchproc": root, "github.com/batchproc/batchproc/kafkasink": filepath.Join(root, "kafkasink")},
			func(m string) bool {
				return m == "github.com/batchproc/batchproc" || m == "github.com/batchproc/batchproc/kafkasink" ||
					m == "github.com/klauspost/compress" || m == "github.com/pierrec/lz4/v4" ||
					strings.HasPrefix(m, "github.com/twmb/franz-go")
			}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			mod := "module example.com/adopter\n\ngo 1.26.0\n"
			for from, to := range tc.replaces {
				mod += "\nreplace " + from + " => " + to + "\n"
			}
			src := "package main\n\nimport (\n"
			for _, imp := range tc.imports {
				src += "\t_ \"" + imp + "\"\n"
			}
			src += ")\n\nfunc main() {}\n"
			for name, data := range map[string]string{"go.mod": mod, "main.go": src} {
				if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			run := func(args ...string) string {
				cmd := exec.Command("go", args...)
				cmd.Dir = dir
				cmd.Env = append(os.Environ(), "GOWORK=off", "GOFLAGS=-mod=mod")
				out, err := cmd.CombinedOutput()
				if err != nil {
					t.Fatalf("go %s: %v\n%s", strings.Join(args, " "), err, out)
				}
				return string(out)
			}
			run("mod", "tidy")
			run("build", "./...")
			var extra []string
			for _, line := range strings.Split(strings.TrimSpace(run("list", "-m", "all")), "\n") {
				m := strings.Fields(line)[0]
				if m != "example.com/adopter" && !tc.allowed(m) {
					extra = append(extra, line)
				}
			}
			if len(extra) > 0 {
				t.Errorf("the adopter's module graph holds modules it does not use:\n%s", strings.Join(extra, "\n"))
			}
		})
	}
}
