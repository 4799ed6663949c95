package spool

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/batchproc/batchproc"
	"github.com/batchproc/batchproc/batchproctest"
)

const fullDiskChildEnv = "SPOOL_FULL_DISK_CHILD"

// A region is a mapped file: were its blocks not allocated when it is
// made, the first store to a page the filesystem has no room for would
// raise SIGBUS and kill the host process. On a full filesystem a region
// is refused instead (the batch is filled unguarded, and counted), and
// the Adds go on. The test runs in a child process, in mount and user
// namespaces of its own, on a 1 MiB tmpfs filled to the last block (a
// kernel's filesystem, where a sparse file's pages are allocated on first
// touch as on ext4 or xfs).
func TestRegionOnFullDiskIsRefused(t *testing.T) {
	if os.Getenv(fullDiskChildEnv) != "" {
		fullDiskChild(t)
		return
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.CommandContext(t.Context(), exe, "-test.run", "^TestRegionOnFullDiskIsRefused$", "-test.v")
	cmd.Env = append(os.Environ(), fullDiskChildEnv+"="+t.TempDir())
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Cloneflags:  syscall.CLONE_NEWUSER | syscall.CLONE_NEWNS,
		UidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: os.Getuid(), Size: 1}},
		GidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: os.Getgid(), Size: 1}},
	}
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "--- PASS: TestRegionOnFullDiskIsRefused") {
		t.Fatalf("child on a full tmpfs: %v\n%s", err, out)
	}
}

// fullDiskChild is TestRegionOnFullDiskIsRefused in the child: it mounts
// the tmpfs, opens a spool on it, fills what is left, and adds.
func fullDiskChild(t *testing.T) {
	dir := os.Getenv(fullDiskChildEnv)
	if err := syscall.Mount("", "/", "", syscall.MS_REC|syscall.MS_PRIVATE, ""); err != nil {
		t.Fatalf("making mounts private: %v", err)
	}
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size=1m"); err != nil {
		t.Fatalf("mounting a tmpfs on %s: %v", dir, err)
	}
	defer syscall.Unmount(dir, 0)
	sdir := filepath.Join(dir, "spool")
	s := mustOpen(t, sdir, WithSync(SyncNever), WithSegmentSize(64<<10), WithMaxBytes(1<<20))
	// Fill the filesystem: nothing is left for a region's pages.
	f, err := os.Create(filepath.Join(dir, "filler"))
	if err != nil {
		t.Fatal(err)
	}
	block := make([]byte, 4096)
	for {
		if _, err := f.Write(block); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatalf("filling the tmpfs: %v", err)
			}
			break
		}
	}
	f.Close()
	var rec batchproctest.Recorder
	p := spooled(t, s, &rec, batchproc.WithMaxBatchBytes(64<<10), batchproc.WithMaxBatchEvents(100))
	const n = 500
	for i := range n {
		if err := p.Add(context.Background(), batchproc.Event{Payload: payloadN(i)}); err != nil {
			t.Fatalf("Add %d on a full disk: %v", i, err)
		}
	}
	if err := p.Shutdown(context.Background()); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	st := p.Stats()
	if st.Delivered != n || st.Unguarded == 0 || st.Journaled != 0 {
		t.Fatalf("on a full disk: want every event delivered from memory, unguarded and unjournaled: %+v", st)
	}
}

func payloadN(i int) []byte {
	return []byte(`{"i":` + strings.Repeat("7", 100) + `,"n":"` + string(rune('a'+i%26)) + `"}`)
}
