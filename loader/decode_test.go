package loader

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/batchproc/batchproc/loader/store"
)

// The oracle: encoding/json decides validity and the decoded members; the
// loader's decoder must agree with it on every input.

type oracleEvent struct {
	id, typ string
	ts      time.Time
	payload []byte
}

// oracleObject judges one event object (b is the whole line or element).
func oracleObject(b []byte) (oracleEvent, bool) {
	if !json.Valid(b) || !utf8.Valid(b) {
		return oracleEvent{}, false
	}
	trimmed := bytes.Trim(b, " \t\r\n")
	if trimmed[0] != '{' {
		return oracleEvent{}, false
	}
	var m map[string]any
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber() // 1e400 is valid JSON but no float64
	if err := dec.Decode(&m); err != nil {
		panic("json.Valid accepted what Decode refuses: " + err.Error())
	}
	ev := oracleEvent{payload: trimmed}
	for name, dst := range map[string]*string{"id": &ev.id, "type": &ev.typ} {
		if v, ok := m[name]; ok {
			s, isStr := v.(string)
			if !isStr {
				return oracleEvent{}, false
			}
			*dst = s
		}
	}
	if v, ok := m["ts"]; ok {
		s, isStr := v.(string)
		if !isStr {
			return oracleEvent{}, false
		}
		t, err := time.Parse(time.RFC3339, s)
		if err != nil {
			return oracleEvent{}, false
		}
		ev.ts = t
	}
	return ev, true
}

// oracleNDJSON returns the events of body or the 1-based line of the first
// bad one (0 for an empty body).
func oracleNDJSON(body []byte) ([]oracleEvent, int, bool) {
	if len(body) == 0 {
		return nil, 0, false
	}
	lines := bytes.Split(body, []byte("\n"))
	if len(lines[len(lines)-1]) == 0 {
		lines = lines[:len(lines)-1]
	}
	var evs []oracleEvent
	for i, l := range lines {
		ev, ok := oracleObject(l)
		if !ok {
			return nil, i + 1, false
		}
		evs = append(evs, ev)
	}
	return evs, 0, true
}

// oracleJSONArray returns the events of body, or whether it is bad.
func oracleJSONArray(body []byte) ([]oracleEvent, bool) {
	if !json.Valid(body) || !utf8.Valid(body) {
		return nil, false
	}
	var raw []json.RawMessage
	if err := json.Unmarshal(body, &raw); err != nil || len(raw) == 0 {
		return nil, false // not an array, or empty
	}
	var evs []oracleEvent
	for _, r := range raw {
		ev, ok := oracleObject(r)
		if !ok {
			return nil, false
		}
		evs = append(evs, ev)
	}
	return evs, true
}

func newTestDecoder() *decoder {
	return &decoder{maxLine: 1 << 30, maxEvents: 1 << 30}
}

func sameEvents(t *testing.T, got []store.Event, want []oracleEvent) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%d events, oracle %d", len(got), len(want))
	}
	for i := range got {
		g, w := got[i], want[i]
		if g.ID != w.id || g.Type != w.typ || !g.TS.Equal(w.ts) || !bytes.Equal(g.Payload, w.payload) {
			t.Fatalf("event %d: got id %q type %q ts %v payload %q\noracle id %q type %q ts %v payload %q",
				i, g.ID, g.Type, g.TS, g.Payload, w.id, w.typ, w.ts, w.payload)
		}
	}
}

func checkNDJSON(t *testing.T, body []byte) {
	d := newTestDecoder()
	err := d.decodeNDJSON(body)
	want, line, ok := oracleNDJSON(body)
	if !ok {
		if err == nil {
			t.Fatalf("accepted %.300q; oracle: bad line %d", body, line)
		}
		if err.status != 400 || err.line != line {
			t.Fatalf("%.300q: error %d line %d (%s); oracle: line %d", body, err.status, err.line, err.msg, line)
		}
		return
	}
	if err != nil {
		t.Fatalf("refused %.300q: %v; oracle accepts", body, err)
	}
	sameEvents(t, d.events, want)
}

func checkJSONArray(t *testing.T, body []byte) {
	d := newTestDecoder()
	err := d.decodeJSONArray(body)
	want, ok := oracleJSONArray(body)
	if !ok {
		if err == nil {
			t.Fatalf("accepted %.300q; oracle refuses", body)
		}
		if err.status != 400 {
			t.Fatalf("%.300q: status %d", body, err.status)
		}
		return
	}
	if err != nil {
		t.Fatalf("refused %.300q: %v; oracle accepts", body, err)
	}
	sameEvents(t, d.events, want)
}

// seeds are shared by the unit tests and the fuzz corpus.
var ndjsonSeeds = []string{
	"",
	"\n",
	"{}",
	"{}\n",
	"{}\n\n",
	"{}\r\n{}\r\n",
	" {} \n\t{}\t",
	`{"id":"a","type":"b","ts":"2026-01-02T03:04:05Z"}` + "\n",
	`{"id":"a\u0062\n\"\\\/\b\f\r\t","type":"\ud83d\ude00\ud800x\udc00","ts":"2026-01-02T03:04:05.999999999-07:30"}`,
	`{"\u0069d":"esc key","t\u0073":"2026-01-02T03:04:05+00:00","ty\u0070e":"x"}`,
	`{"id":"first","id":"second","type":1,"type":"ok"}`,
	`{"id":1}`, `{"id":null}`, `{"type":[]}`, `{"ts":"yesterday"}`, `{"ts":5}`, `{"ts":"2026-01-02T03:04:05"}`,
	`{"ts":"2026-01-02 03:04:05Z"}`, `{"ts":"2026-01-02T24:00:00Z"}`, `{"ts":"2024-02-29T23:59:59.000000001Z"}`,
	`{"ts":"2023-02-29T00:00:00Z"}`, `{"ts":"2026-01-02T03:04:05.1234567890Z"}`, `{"ts":"2026-01-02T03:04:05.Z"}`,
	`{"ID":5,"Type":7,"TS":9}`,
	`{"a":[1,-2.5e+10,0.0,-0,1E-7,true,false,null,"s",{"b":{}}],"c":{}}`,
	`{"a":01}`, `{"a":1.}`, `{"a":-}`, `{"a":.5}`, `{"a":1e}`, `{"a":+1}`, `{"a":1e400}`,
	`{"a":tru}`, `{"a":nul}`, `{"a":"\x"}`, `{"a":"\u12"}`, `{"a":"\u12G4"}`,
	"{\"a\":\"\x01\"}", "{\"a\":\"\xff\"}", "{\"a\":\"\xed\xa0\x80\"}", "{\"a\":\"é\"}",
	`{"a":1,}`, `{,}`, `{"a"}`, `{"a":1 "b":2}`, `{"a":[1,]}`, `{"a":[1 2]}`, `{"a":]`, `{1:2}`,
	`[]`, `[{}]`, `"str"`, `1`, `null`, `{}x`, `{}{}`, `{`, `}`, `{"a":{"b":[`,
	"{}\n{}\n[1]\n{}", "{}\n\n{}", "{}\n \n{}", "\xef\xbb\xbf{}",
	`{"a":"` + strings.Repeat("x", 100) + `\"` + strings.Repeat("y", 17) + `"}`,
	strings.Repeat(`{"a":[`, 3) + strings.Repeat(`]}`, 3),
}

var arraySeeds = []string{
	"", " ", "[]", " [ ] ", "[{}]", "[{},{}]", ` [ {"id":"a"} , {"b":[1,{}]} ] `, "[{}", "[{},", "[{},]", "[,{}]",
	"[{}]x", "[{}] ]", "[1]", "[{}, 1]", `[{"id":2}]`, `[{"ts":"2026-01-02T03:04:05Z","type":"\u0074"}]`,
	"{}", "[[{}]]", "[{}\n,\n{}]", "\t[{}]\r\n", `[{"a":"\ud83d"}]`, "[{\"a\":\"\xff\"}]", "[null]",
}

func TestDecodeNDJSONOracle(t *testing.T) {
	for _, s := range ndjsonSeeds {
		checkNDJSON(t, []byte(s))
	}
}

func TestDecodeJSONArrayOracle(t *testing.T) {
	for _, s := range arraySeeds {
		checkJSONArray(t, []byte(s))
	}
}

func TestNestingDepth(t *testing.T) {
	// encoding/json allows 10000 nested containers, the event object
	// included, and refuses 10001; so does the loader.
	for _, depth := range []int{maxNestingDepth, maxNestingDepth + 1} {
		inner := depth - 1
		line := []byte(`{"a":` + strings.Repeat("[", inner) + strings.Repeat("]", inner) + "}")
		checkNDJSON(t, line)
	}
	// In an array the outer array counts too.
	for _, depth := range []int{maxNestingDepth, maxNestingDepth + 1} {
		inner := depth - 2
		body := []byte(`[{"a":` + strings.Repeat("[", inner) + strings.Repeat("]", inner) + "}]")
		checkJSONArray(t, body)
	}
	d := newTestDecoder()
	if err := d.decodeNDJSON([]byte(`{"a":` + strings.Repeat("[", maxNestingDepth) + strings.Repeat("]", maxNestingDepth) + "}")); err == nil || !strings.Contains(err.msg, "depth") {
		t.Errorf("too deep: %v", err)
	}
}

func TestSpecialMask(t *testing.T) {
	// The SWAR scan finds the first special byte at every position.
	for pos := range 8 {
		for _, c := range []byte{'"', '\\', 0, 0x1f, 0x80, 0xff} {
			b := []byte("zzzzzzzz") // a backslash before z is no valid escape
			b[pos] = c
			s := append([]byte(`"`), b...)
			s = append(s, `xyz"`...)
			end, _, err := scanString(s, 0)
			switch {
			case c == '"':
				if err != nil || end != pos+2 {
					t.Errorf("quote at %d: end %d err %v", pos, end, err)
				}
			case c == '\\' || c < 0x20 || c >= 0x80:
				if err == nil {
					t.Errorf("byte %#x at %d accepted", c, pos)
				}
			}
		}
	}
	for c := 0x20; c < 0x80; c++ {
		if c == '"' || c == '\\' {
			continue
		}
		s := []byte(`"` + strings.Repeat(string(rune(c)), 9) + `"`)
		if end, _, err := scanString(s, 0); err != nil || end != len(s) {
			t.Errorf("plain byte %#x: end %d err %v", c, end, err)
		}
	}
}

func TestDecoderLimits(t *testing.T) {
	d := &decoder{maxLine: 10, maxEvents: 2}
	if err := d.decodeNDJSON([]byte("{}\n{\"a\":12345}\n")); err == nil || err.status != 413 {
		t.Errorf("long line: %v", err)
	}
	d.reset()
	if err := d.decodeNDJSON([]byte("{\"a\":1234}\n")); err != nil { // exactly 10 bytes
		t.Errorf("line at the limit: %v", err)
	}
	d.reset()
	if err := d.decodeNDJSON([]byte("{}\n{}\n{}\n")); err == nil || err.status != 413 {
		t.Errorf("3 events: %v", err)
	}
	d.reset()
	if err := d.decodeNDJSON([]byte("{}\n{}\n")); err != nil || len(d.events) != 2 {
		t.Errorf("2 events: %v", err)
	}
}

// TestPayloadAliasing: payloads alias the body (no copy), with their
// capacity capped so that a store appending to one cannot clobber the next.
func TestPayloadAliasing(t *testing.T) {
	body := []byte("{}\n{\"a\":1}\n")
	d := newTestDecoder()
	if err := d.decodeNDJSON(body); err != nil {
		t.Fatal(err)
	}
	p := d.events[0].Payload
	if &p[0] != &body[0] || cap(p) != 2 {
		t.Errorf("payload %q cap %d does not alias the body", p, cap(p))
	}
}

func TestParseTS(t *testing.T) {
	for _, s := range []string{
		"2026-01-02T03:04:05Z", "2026-01-02T03:04:05.1Z", "2026-01-02T03:04:05.123456789Z",
		"2026-01-02T03:04:05.1234567891Z", "2024-02-29T23:59:59Z", "2023-02-29T00:00:00Z",
		"2000-02-29T00:00:00Z", "1900-02-29T00:00:00Z", "0000-01-01T00:00:00Z", "9999-12-31T23:59:59.999999999Z",
		"1969-12-31T23:59:59.5Z", "0001-03-01T00:00:00Z", "2026-13-01T00:00:00Z", "2026-00-01T00:00:00Z",
		"2026-01-32T00:00:00Z", "2026-04-31T00:00:00Z", "2026-01-01T24:00:00Z", "2026-01-01T00:60:00Z",
		"2026-01-01T00:00:60Z", "2026-01-01T00:00:00.Z", "2026-01-01T00:00:00z", "2026-01-01t00:00:00Z",
		"2026-01-01T00:00:00+01:00", "2026-01-01T00:00:00-00:00", "2026-1-01T00:00:00Z", "+026-01-01T00:00:00Z",
		"2026-01-01T00:00:00.-1Z", "2026-01-01T00:00:00.1a2Z", "2026-01-01 00:00:00Z", "", "Z",
	} {
		want, werr := time.Parse(time.RFC3339, s)
		got, gerr := parseTS([]byte(s))
		if (werr == nil) != (gerr == nil) || got != want {
			t.Errorf("%q: got %v, %v; time.Parse: %v, %v", s, got, gerr, want, werr)
		}
	}
}
