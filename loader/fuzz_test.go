package loader

import "testing"

// FuzzNDJSON holds the NDJSON decoder to encoding/json: the same lines are
// valid, the first bad line is the same, and id/type/ts decode the same.
func FuzzNDJSON(f *testing.F) {
	for _, s := range ndjsonSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) { checkNDJSON(t, body) })
}

// FuzzJSONArray holds the JSON array decoder to encoding/json.
func FuzzJSONArray(f *testing.F) {
	for _, s := range arraySeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) { checkJSONArray(t, body) })
}
