package buildinfo

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strings"
	"testing"
)

func TestFormat(t *testing.T) {
	tail := " go1.26.8 " + runtime.GOOS + "/" + runtime.GOARCH
	vcs := func(kv ...string) []debug.BuildSetting {
		var s []debug.BuildSetting
		for i := 0; i < len(kv); i += 2 {
			s = append(s, debug.BuildSetting{Key: kv[i], Value: kv[i+1]})
		}
		return s
	}
	for _, c := range []struct {
		name string
		bi   *debug.BuildInfo
		want string
	}{
		{"go install @version", &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Path: "github.com/batchproc/batchproc", Version: "v0.3.0"}},
			"cmd v0.3.0" + tail},
		{"go build in a clean checkout", &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "v0.0.0-20261201082158-db2905c1234a"},
			Settings: vcs("-trimpath", "true", "vcs", "git", "vcs.revision", "db2905c1234a5fe0db2905c1234a5fe0db2905c1", "vcs.time", "2026-12-01T08:21:58Z", "vcs.modified", "false")},
			"cmd v0.0.0-20261201082158-db2905c1234a (revision db2905c1234a5fe0db2905c1234a5fe0db2905c1, 2026-12-01T08:21:58Z)" + tail},
		{"go build with uncommitted changes", &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "v0.0.0-20261201082158-db2905c1234a+dirty"},
			Settings: vcs("vcs.modified", "true", "vcs.time", "2026-12-01T08:21:58Z", "vcs.revision", "db2905c1234a5fe0db2905c1234a5fe0db2905c1")},
			"cmd v0.0.0-20261201082158-db2905c1234a+dirty (revision db2905c1234a5fe0db2905c1234a5fe0db2905c1, 2026-12-01T08:21:58Z, modified)" + tail},
		{"revision without a time", &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "(devel)"}, Settings: vcs("vcs.revision", "abc")},
			"cmd (devel) (revision abc)" + tail},
		{"go run, no version", &debug.BuildInfo{GoVersion: "go1.26.8"}, "cmd (devel)" + tail},
		{"no build info", nil, "cmd (unknown) " + runtime.Version() + " " + runtime.GOOS + "/" + runtime.GOARCH},
	} {
		if got := Format("cmd", c.bi); got != c.want {
			t.Errorf("%s:\n got %q\nwant %q", c.name, got, c.want)
		}
	}
}

// TestString: in this test binary (which the go command stamps with no
// module version and no VCS data) the line still names the binary and
// the Go version it runs on.
func TestString(t *testing.T) {
	got := String("batchx")
	if want := "batchx (devel) " + runtime.Version() + " " + runtime.GOOS + "/" + runtime.GOARCH; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

// TestBuiltBinary builds a real binary with `go build` from this checkout
// and checks its line against git: the go command stamps the checkout's
// HEAD revision and whether the tree has uncommitted changes (git status
// --porcelain, untracked files included), and String must show them.
// In a linked git worktree, whose .git is a file, the go command finds no
// repository (golang/go#58218) and the line must show no revision.
func TestBuiltBinary(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a binary")
	}
	goCmd, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("the go command is needed: %v", err)
	}
	bin := filepath.Join(t.TempDir(), "version")
	if runtime.GOOS == "windows" {
		bin += ".exe"
	}
	build := exec.Command(goCmd, "build", "-buildvcs=auto", "-o", bin, "./testdata/version")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	out, err := exec.Command(bin).Output()
	if err != nil {
		t.Fatalf("running the binary: %v", err)
	}
	line := strings.TrimSpace(string(out))
	if !strings.HasPrefix(line, "version ") || !strings.HasSuffix(line, " "+runtime.Version()+" "+runtime.GOOS+"/"+runtime.GOARCH) {
		t.Errorf("line %q lacks the name or the Go version and platform", line)
	}

	root := vcsRoot(t)
	if root == "" {
		if strings.Contains(line, "(revision ") {
			t.Errorf("no .git directory above the package, yet %q shows a revision", line)
		}
		return
	}
	head, err := exec.Command("git", "-C", root, "rev-parse", "HEAD").Output()
	if err != nil {
		t.Fatalf("git rev-parse HEAD in %s: %v", root, err)
	}
	status, err := exec.Command("git", "-C", root, "status", "--porcelain").Output()
	if err != nil {
		t.Fatal(err)
	}
	if want := "(revision " + strings.TrimSpace(string(head)) + ", "; !strings.Contains(line, want) {
		t.Errorf("line %q lacks %q", line, want)
	}
	if dirty := len(status) > 0; dirty != strings.Contains(line, ", modified)") {
		t.Errorf("git status says uncommitted=%v, line %q disagrees", dirty, line)
	}
}

// vcsRoot is the directory the go command takes as the git repository
// root: the nearest one above the working directory holding a .git
// directory (a linked worktree's .git file does not count), or "".
func vcsRoot(t *testing.T) string {
	dir, err := filepath.Abs(".")
	if err != nil {
		t.Fatal(err)
	}
	for {
		if fi, err := os.Stat(filepath.Join(dir, ".git")); err == nil && fi.IsDir() {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return ""
		}
		dir = parent
	}
}
