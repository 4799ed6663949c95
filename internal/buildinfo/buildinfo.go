// Package buildinfo formats what the Go toolchain recorded in a binary
// (runtime/debug.ReadBuildInfo) as the one line the commands print for
// -version:
//
//	batchloader v0.3.0 go1.26.8 linux/amd64
//	batchloader v0.0.0-20261201082158-db2905c1234a+dirty (revision db2905c1234a5fe0…, 2026-12-01T08:21:58Z, modified) go1.26.8 linux/amd64
//
// A binary installed with `go install …@version` carries the module
// version and no VCS data; one built with `go build` in a git checkout
// carries the revision, its commit time and whether the tree had
// uncommitted changes (and a pseudo-version derived from them); `go run`
// and test binaries carry neither, and print "(devel)". A build in a
// linked git worktree carries no VCS data either: the go command takes only
// a .git directory as a repository root (golang/go#58218).
package buildinfo

import (
	"runtime"
	"runtime/debug"
	"strings"
)

// String is the version line of the running binary, naming it name.
func String(name string) string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		bi = nil
	}
	return Format(name, bi)
}

// Format is the version line for name built as bi; a nil bi (a binary
// built without module support) gives "(unknown)" and the running Go
// version.
func Format(name string, bi *debug.BuildInfo) string {
	var b strings.Builder
	b.WriteString(name)
	b.WriteByte(' ')
	goVersion := runtime.Version()
	if bi == nil {
		b.WriteString("(unknown)")
	} else {
		if bi.GoVersion != "" {
			goVersion = bi.GoVersion
		}
		v := bi.Main.Version
		if v == "" {
			v = "(devel)"
		}
		b.WriteString(v)
		var rev, at, modified string
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				rev = s.Value
			case "vcs.time":
				at = s.Value
			case "vcs.modified":
				modified = s.Value
			}
		}
		if rev != "" {
			b.WriteString(" (revision ")
			b.WriteString(rev)
			if at != "" {
				b.WriteString(", ")
				b.WriteString(at)
			}
			if modified == "true" {
				b.WriteString(", modified")
			}
			b.WriteByte(')')
		}
	}
	b.WriteByte(' ')
	b.WriteString(goVersion)
	b.WriteByte(' ')
	b.WriteString(runtime.GOOS)
	b.WriteByte('/')
	b.WriteString(runtime.GOARCH)
	return b.String()
}
