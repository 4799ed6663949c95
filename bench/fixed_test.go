package bench

import "testing"

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
