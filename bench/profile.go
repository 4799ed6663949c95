package bench

import (
	"bytes"
	"fmt"
	"runtime"
	"runtime/pprof"
	"strings"

	"github.com/google/pprof/profile"
)

// The CPU-profile figures, defined exactly.
//
// The seed's figure ("share of runtime.selectgo spent in sellock /
// acquireSudog", 66% / 85% / 50% in its table) is read here as: of the CPU
// samples whose stack contains runtime.selectgo, the share whose stack also
// contains runtime.sellock or runtime.acquireSudog ([SelectOverheadFuncs]).
// That is what the post's flame graphs show for the pool designs (the
// selectgo tower and the sellock / acquireSudog blocks inside it). For its
// async design the post added runtime.recv and the deep copy to its 50%; we
// do not: one definition for every design, so the column compares like with
// like.
//
// The broader figure, RuntimeSyncShare, is the share of the design's CPU
// samples whose stack contains any of [RuntimeSyncFuncs]: the runtime's
// channel, lock and scheduler functions (inclusive: time under them counts).
var (
	SelectOverheadFuncs = []string{"runtime.sellock", "runtime.acquireSudog"}

	RuntimeSyncFuncs = []string{
		// channels and select
		"runtime.chansend", "runtime.chansend1", "runtime.chanrecv", "runtime.chanrecv1",
		"runtime.chanrecv2", "runtime.selectgo", "runtime.selectnbsend", "runtime.selectnbrecv",
		"runtime.closechan",
		// locks, semaphores, futexes
		"runtime.lock2", "runtime.unlock2", "runtime.semacquire1", "runtime.semrelease1",
		"runtime.futex", "runtime.futexsleep", "runtime.futexwakeup",
		"sync.(*Mutex).lockSlow", "sync.(*Mutex).unlockSlow",
		"internal/sync.(*Mutex).lockSlow", "internal/sync.(*Mutex).unlockSlow",
		"sync.(*RWMutex).RLock", "sync.(*RWMutex).Lock", "sync.(*Cond).Wait",
		// the scheduler: parking, waking, finding work
		"runtime.gopark", "runtime.goready", "runtime.ready", "runtime.park_m",
		"runtime.schedule", "runtime.findRunnable", "runtime.wakep", "runtime.startm",
		"runtime.stopm", "runtime.notesleep", "runtime.notewakeup", "runtime.runqgrab",
		"runtime.runqsteal", "runtime.goschedImpl", "runtime.gosched_m",
	}

	// CopyFuncs are the functions whose allocations count as buffer copies
	// at flush (the seed's "memory overhead"): matched on the function's
	// base name, type parameters removed, so seeddesigns.deepCopy[...]
	// matches "deepCopy". The one copy every design makes at Add (the event
	// into the buffer) is not a buffer copy and is not counted.
	CopyFuncs = []string{"deepCopy"}

	// loadgenFuncs are the load generator's functions: a heap sample whose
	// stack runs through eventBuilder.next (the event the service hands to
	// Add), or whose innermost non-runtime frame is one of these (goroutines
	// and timers of the generator), is not the design's allocation.
	loadgenFuncs = []string{
		"github.com/batchproc/batchproc/bench.(*eventBuilder).next",
		"github.com/batchproc/batchproc/bench.openLoop",
		"github.com/batchproc/batchproc/bench.openLoop.func1",
		"github.com/batchproc/batchproc/bench.closedHandler",
		"github.com/batchproc/batchproc/bench.runLoad",
		"github.com/batchproc/batchproc/bench.runLoad.func1",
		"github.com/batchproc/batchproc/bench.runLoad.func2",
		"github.com/batchproc/batchproc/bench.(*latencyShards).record",
	}

	// harnessPrefixes mark the harness's own allocations: writing the CPU
	// profile, latency histograms, progress and heap sampling.
	harnessPrefixes = []string{
		"runtime/pprof.", "github.com/HdrHistogram/",
		"github.com/batchproc/batchproc/bench.(*progress)", "github.com/batchproc/batchproc/bench.startHeapPeak",
		"github.com/batchproc/batchproc/bench.newLatency", "github.com/batchproc/batchproc/bench.(*latencyShards)",
		"github.com/batchproc/batchproc/bench.HeapSnapshot", "github.com/batchproc/batchproc/bench.analyzeProfiles",
	}

	// serverPrefixes mark stacks that belong to the receiving side when it
	// runs in the harness's process (the in-process loader or null
	// endpoint): their CPU and allocations are not the design's.
	serverPrefixes = []string{
		"net/http.(*conn).serve", "net/http.(*Server).Serve", "net/http.(*connReader)",
		"github.com/batchproc/batchproc/loader", "modernc.org/", "database/sql",
		"github.com/batchproc/batchproc/bench.(*receiver",
		// -sink kafka: the in-process broker, and the consumer's side of
		// its kgo client (fetching and decoding records, the group).
		"github.com/twmb/franz-go/pkg/kfake.", "github.com/twmb/franz-go/pkg/kgo.(*source)",
		"github.com/twmb/franz-go/pkg/kgo.(*cursorOffsetNext)", "github.com/twmb/franz-go/pkg/kgo.(*groupConsumer)",
		"github.com/twmb/franz-go/pkg/kmsg.(*FetchResponse)",
	}
)

// Profile labels on the harness's goroutines. The load generator and the
// design run under side=client, the receiving side under side=loader;
// goroutines inherit labels from the goroutine that starts them, so the
// design's workers, sends and HTTP transport connections are client, the
// server's connections loader. Runtime work with no goroutine (the
// scheduler, GC workers) has no label and is counted with the design. The
// harness's own goroutines (progress, heap sampling) are side=harness and
// left out like the loader's; so is the load generator (side=loadgen) except
// while it is inside Add.
const (
	labelSide       = "side"
	sideClient      = "client"
	sideLoader      = "loader"
	sideHarness     = "harness"
	sideLoadgen     = "loadgen"
	sampleTypeCPU   = "cpu"
	sampleTypeAlloc = "alloc_space"
)

// CPUAnalysis is what one CPU profile says about one design.
type CPUAnalysis struct {
	CPUSeconds          float64 // CPU of the samples kept (the design's)
	LabelledSeconds     float64 // of CPUSeconds, the samples labelled side=client (no unlabelled runtime work)
	ExcludedSeconds     float64 // CPU of the receiving side, left out
	SelectSeconds       float64 // kept CPU under runtime.selectgo
	SelectOverheadShare float64 // of SelectSeconds, the share under SelectOverheadFuncs
	RuntimeSyncShare    float64 // of CPUSeconds, the share under RuntimeSyncFuncs
	// Samples and SelectSamples count the profile's samples behind
	// CPUSeconds and SelectSeconds: a share of k samples is uncertain by up
	// to 0.5/sqrt(k) (binomial), so the report prints a share only when it
	// rests on at least [MinShareSamples].
	Samples, SelectSamples int64
	LabelledSamples        int64 // of Samples, those labelled side=client
}

// MinShareSamples is the fewest CPU samples a share (select overhead,
// runtime sync) is printed from; below it the report says "n/a (k
// samples)". With 30 samples the share's standard error is at most 9
// percentage points.
const MinShareSamples = 30

// HeapAnalysis is what one alloc_space profile (or delta) says.
type HeapAnalysis struct {
	AllocBytes         int64   // allocated by the design (receiving side left out)
	ExcludedAllocBytes int64   // allocated by the receiving side, the load generator and the harness
	CopyBytes          int64   // of AllocBytes, allocated under CopyFuncs
	CopyShare          float64 // CopyBytes / AllocBytes
}

// stackFuncs returns the function names of a sample's stack, inlined frames
// included.
func stackFuncs(s *profile.Sample) []string {
	var names []string
	for _, loc := range s.Location {
		for _, ln := range loc.Line {
			if ln.Function != nil {
				names = append(names, ln.Function.Name)
			}
		}
	}
	return names
}

func containsAny(names []string, set map[string]bool) bool {
	for _, n := range names {
		if set[n] {
			return true
		}
	}
	return false
}

func toSet(names []string) map[string]bool {
	m := make(map[string]bool, len(names))
	for _, n := range names {
		m[n] = true
	}
	return m
}

func isServerStack(names []string) bool { return hasPrefixFrame(names, serverPrefixes) }

func hasPrefixFrame(names, prefixes []string) bool {
	for _, n := range names {
		for _, p := range prefixes {
			if strings.HasPrefix(n, p) {
				return true
			}
		}
	}
	return false
}

// baseName is a function's name without package path, receiver or type
// parameters: "a/b.(*T).deepCopy[...]" -> "deepCopy".
func baseName(fn string) string {
	if i := strings.IndexByte(fn, '['); i >= 0 {
		fn = fn[:i]
	}
	if i := strings.LastIndexByte(fn, '/'); i >= 0 {
		fn = fn[i+1:]
	}
	if i := strings.LastIndexByte(fn, '.'); i >= 0 {
		fn = fn[i+1:]
	}
	return fn
}

func valueIndex(p *profile.Profile, typ string) (int, error) {
	for i, st := range p.SampleType {
		if st.Type == typ {
			return i, nil
		}
	}
	return 0, fmt.Errorf("bench: profile has no %q sample type", typ)
}

// AnalyzeCPU computes the CPU figures of p. A sample labelled with a side
// other than client (the loader, the harness), or whose stack runs through
// the receiving side's code, is excluded.
func AnalyzeCPU(p *profile.Profile) (CPUAnalysis, error) {
	var a CPUAnalysis
	vi, err := valueIndex(p, sampleTypeCPU)
	if err != nil {
		return a, err
	}
	unit := 1e-9 // nanoseconds
	if u := p.SampleType[vi].Unit; u != "nanoseconds" && u != "" {
		return a, fmt.Errorf("bench: unexpected cpu unit %q", u)
	}
	// Sample counts: the "samples" value when the profile has one (Go's
	// CPU profiles do), else one per sample record.
	ci := -1
	for i, st := range p.SampleType {
		if st.Type == "samples" {
			ci = i
		}
	}
	overhead, sync := toSet(SelectOverheadFuncs), toSet(RuntimeSyncFuncs)
	var total, labelled, excluded, sel, selOver, syncV int64
	for _, s := range p.Sample {
		v := s.Value[vi]
		n := int64(1)
		if ci >= 0 {
			n = s.Value[ci]
		}
		names := stackFuncs(s)
		if side := s.Label[labelSide]; (len(side) > 0 && side[0] != sideClient) || isServerStack(names) {
			excluded += v
			continue
		}
		total += v
		a.Samples += n
		if side := s.Label[labelSide]; len(side) > 0 {
			labelled += v
			a.LabelledSamples += n
		}
		if containsAny(names, sync) {
			syncV += v
		}
		if containsAny(names, map[string]bool{"runtime.selectgo": true}) {
			sel += v
			a.SelectSamples += n
			if containsAny(names, overhead) {
				selOver += v
			}
		}
	}
	a.CPUSeconds = float64(total) * unit
	a.LabelledSeconds = float64(labelled) * unit
	a.ExcludedSeconds = float64(excluded) * unit
	a.SelectSeconds = float64(sel) * unit
	if sel > 0 {
		a.SelectOverheadShare = float64(selOver) / float64(sel)
	}
	if total > 0 {
		a.RuntimeSyncShare = float64(syncV) / float64(total)
	}
	return a, nil
}

// isLoadgenStack reports whether a heap sample's stack is the load
// generator's own allocation (see loadgenFuncs).
func isLoadgenStack(names []string) bool {
	for _, n := range names {
		if n == loadgenFuncs[0] {
			return true
		}
	}
	for _, n := range names {
		if strings.HasPrefix(n, "runtime.") || strings.HasPrefix(n, "internal/") {
			continue
		}
		for _, f := range loadgenFuncs[1:] {
			if n == f {
				return true
			}
		}
		return false
	}
	return false
}

// AnalyzeHeap computes the allocation figures of a heap profile's
// alloc_space (use a delta profile, [HeapDelta], for one run). Stacks that
// run through the receiving side's code are excluded.
func AnalyzeHeap(p *profile.Profile) (HeapAnalysis, error) {
	var a HeapAnalysis
	vi, err := valueIndex(p, sampleTypeAlloc)
	if err != nil {
		return a, err
	}
	copies := toSet(CopyFuncs)
	for _, s := range p.Sample {
		v := s.Value[vi]
		names := stackFuncs(s)
		if isServerStack(names) || isLoadgenStack(names) || hasPrefixFrame(names, harnessPrefixes) {
			a.ExcludedAllocBytes += v
			continue
		}
		a.AllocBytes += v
		for _, n := range names {
			if copies[baseName(n)] {
				a.CopyBytes += v
				break
			}
		}
	}
	if a.AllocBytes > 0 {
		a.CopyShare = float64(a.CopyBytes) / float64(a.AllocBytes)
	}
	return a, nil
}

// HeapSnapshot returns the process's heap profile now, after a GC so that
// it includes every allocation made so far.
func HeapSnapshot() (*profile.Profile, error) {
	runtime.GC()
	var buf bytes.Buffer
	if err := pprof.Lookup("heap").WriteTo(&buf, 0); err != nil {
		return nil, err
	}
	return profile.Parse(&buf)
}

// HeapDelta returns after minus before: the allocations made between two
// snapshots of the same process. Samples that did not change are dropped.
func HeapDelta(before, after *profile.Profile) (*profile.Profile, error) {
	b := before.Copy()
	b.Scale(-1)
	d, err := profile.Merge([]*profile.Profile{after.Copy(), b})
	if err != nil {
		return nil, err
	}
	kept := d.Sample[:0]
	for _, s := range d.Sample {
		for _, v := range s.Value {
			if v != 0 {
				kept = append(kept, s)
				break
			}
		}
	}
	d.Sample = kept
	return d.Compact(), nil
}
