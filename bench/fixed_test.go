package bench

import (
	"strings"
	"testing"
)

// The fixed-limit designs that the adaptive limit is set against parse, and
// build batchproc with WithMaxInFlight(N).
func TestFixedDesigns(t *testing.T) {
	for _, n := range FixedLimits {
		name := FixedDesign(n)
		got, err := ParseDesigns(name)
		if err != nil || len(got) != 1 || got[0] != name {
			t.Fatalf("ParseDesigns(%q) = %v, %v", name, got, err)
		}
		if spec := designSpecs[name]; spec.newClient == nil || spec.name != name {
			t.Fatalf("design %q not registered", name)
		}
	}
	if _, err := ParseDesigns("batchproc-fixed-3"); err == nil {
		t.Fatal("an unlisted fixed limit parsed")
	}
}

// The null endpoint's knee: at or below it every request waits the base
// latency; past it, latency x (requests at once / knee).
func TestNullEndpointKnee(t *testing.T) {
	n := &nullEndpoint{latency: 100e6, knee: 4}
	for at, want := range map[int64]float64{1: 100e6, 4: 100e6, 8: 200e6, 10: 250e6} {
		if got := float64(n.wait(at)); got != want {
			t.Errorf("wait(%d) = %v, want %v", at, got, want)
		}
	}
	if got := (&nullEndpoint{latency: 100e6}).wait(1000); got != 100e6 {
		t.Errorf("no knee: wait(1000) = %v, want the base latency", got)
	}
	if err := (&Config{Loader: LoaderSQLite, LoaderKnee: 8}).defaults(); err == nil || !strings.Contains(err.Error(), "-loader-knee") {
		t.Error("-loader-knee without -loader null accepted")
	}
}
