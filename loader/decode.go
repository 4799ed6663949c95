package loader

import (
	"bytes"
	"fmt"
	"net/http"
	"strconv"

	"github.com/batchproc/batchproc/loader/store"
)

// decodeError is a request the decoder refuses: status is 400 or 413, line
// is the 1-based line (NDJSON) or element (JSON array) it names, 0 for none.
type decodeError struct {
	status int
	msg    string
	line   int
}

func (e *decodeError) Error() string {
	if e.line > 0 {
		return "line " + strconv.Itoa(e.line) + ": " + e.msg
	}
	return e.msg
}

// strSpan locates an event's ID and Type in decoder.arena.
type strSpan struct{ id0, id1, ty0, ty1 int }

// decoder turns a decoded request body into store events. Payloads alias
// the body; ID and Type share one string allocated per batch. A decoder is
// reused between requests (see work) and is not safe for concurrent use.
type decoder struct {
	sc        scanner
	maxLine   int
	maxEvents int
	events    []store.Event
	spans     []strSpan
	arena     []byte // unescaped IDs and Types of the batch, back to back
	tsBuf     []byte // an unescaped "ts"
}

func (d *decoder) reset() {
	clear(d.events) // drop references to the last body and arena
	d.events = d.events[:0]
	d.spans = d.spans[:0]
	d.arena = d.arena[:0]
}

// decodeNDJSON decodes one event per '\n'-terminated line. The last line's
// newline is optional; any other empty or blank line is an error, as is
// anything after an object on its line.
func (d *decoder) decodeNDJSON(body []byte) *decodeError {
	if len(body) == 0 {
		return &decodeError{status: http.StatusBadRequest, msg: "empty batch: no events"}
	}
	line := 0
	for rest := body; len(rest) > 0; {
		line++
		var l []byte
		if j := bytes.IndexByte(rest, '\n'); j >= 0 {
			l, rest = rest[:j], rest[j+1:]
		} else {
			l, rest = rest, nil
		}
		if len(l) > d.maxLine {
			return &decodeError{status: http.StatusRequestEntityTooLarge,
				msg: fmt.Sprintf("line %d is %d bytes, over the limit of %d", line, len(l), d.maxLine)}
		}
		if len(d.events) >= d.maxEvents {
			return &decodeError{status: http.StatusRequestEntityTooLarge,
				msg: fmt.Sprintf("more than %d events in the batch", d.maxEvents)}
		}
		i := skipSpace(l, 0)
		if i == len(l) {
			return &decodeError{status: http.StatusBadRequest, msg: "empty line", line: line}
		}
		end, err := d.sc.scanObject(l, i, 0)
		if err != nil {
			return &decodeError{status: http.StatusBadRequest, msg: syntaxMsg(err, l), line: line}
		}
		if j := skipSpace(l, end); j != len(l) {
			return &decodeError{status: http.StatusBadRequest,
				msg: fmt.Sprintf("unexpected data after the object at column %d", j+1), line: line}
		}
		if msg := d.addEvent(l, i, end); msg != "" {
			return &decodeError{status: http.StatusBadRequest, msg: msg, line: line}
		}
	}
	d.finish()
	return nil
}

// decodeJSONArray decodes one JSON array of event objects. Errors name the
// 1-based element they were found in as their line; errors outside any
// element (a missing '[', data after the ']') name none.
func (d *decoder) decodeJSONArray(body []byte) *decodeError {
	bad := func(msg string, elem int) *decodeError {
		return &decodeError{status: http.StatusBadRequest, msg: msg, line: elem}
	}
	i := skipSpace(body, 0)
	if i == len(body) {
		return bad("empty batch: no events", 0)
	}
	if body[i] != '[' {
		return bad("malformed JSON array: the body must be one JSON array of objects", 0)
	}
	i = skipSpace(body, i+1)
	if i < len(body) && body[i] == ']' {
		if j := skipSpace(body, i+1); j != len(body) {
			return bad(fmt.Sprintf("malformed JSON array: unexpected data after the array at offset %d", j), 0)
		}
		return bad("empty batch: no events", 0)
	}
	for elem := 1; ; elem++ {
		if len(d.events) >= d.maxEvents {
			return &decodeError{status: http.StatusRequestEntityTooLarge,
				msg: fmt.Sprintf("more than %d events in the batch", d.maxEvents)}
		}
		end, err := d.sc.scanObject(body, i, 1)
		if err != nil {
			return bad(syntaxMsg(err, body), elem)
		}
		if end-i > d.maxLine {
			return &decodeError{status: http.StatusRequestEntityTooLarge,
				msg: fmt.Sprintf("element %d is %d bytes, over the limit of %d", elem, end-i, d.maxLine)}
		}
		if msg := d.addEvent(body, i, end); msg != "" {
			return bad(msg, elem)
		}
		i = skipSpace(body, end)
		if i >= len(body) {
			return bad("malformed JSON array: unexpected end of input, expected ',' or ']'", 0)
		}
		switch body[i] {
		case ',':
			i = skipSpace(body, i+1)
		case ']':
			if j := skipSpace(body, i+1); j != len(body) {
				return bad(fmt.Sprintf("malformed JSON array: unexpected data after the array at offset %d", j), 0)
			}
			d.finish()
			return nil
		default:
			return bad(fmt.Sprintf("malformed JSON array: expected ',' or ']' at offset %d", i), 0)
		}
	}
}

// syntaxMsg describes err, found in b.
func syntaxMsg(err *syntaxError, b []byte) string {
	if err.msg == "not a JSON object" {
		return "not a JSON object (each event must be a JSON object)"
	}
	return fmt.Sprintf("invalid JSON: %s at column %d", err.msg, err.off+1)
}

// addEvent appends the object b[start:end], just scanned, as an event.
// It returns a message when a read member has the wrong type.
func (d *decoder) addEvent(b []byte, start, end int) string {
	f := &d.sc.fields
	var sp strSpan
	var ev store.Event
	if m := f[fieldID]; m.present {
		if b[m.start] != '"' {
			return `"id" must be a string`
		}
		sp.id0 = len(d.arena)
		d.arena = appendStringValue(d.arena, b, m)
		sp.id1 = len(d.arena)
	}
	if m := f[fieldType]; m.present {
		if b[m.start] != '"' {
			return `"type" must be a string`
		}
		sp.ty0 = len(d.arena)
		d.arena = appendStringValue(d.arena, b, m)
		sp.ty1 = len(d.arena)
	}
	if m := f[fieldTS]; m.present {
		if b[m.start] != '"' {
			return `"ts" must be an RFC 3339 time string`
		}
		s := b[m.start+1 : m.end-1]
		if m.esc {
			d.tsBuf = appendUnescaped(d.tsBuf[:0], s)
			s = d.tsBuf
		}
		t, err := parseTS(s)
		if err != nil {
			return fmt.Sprintf(`"ts" is not an RFC 3339 time: %q`, s)
		}
		ev.TS = t
	}
	ev.Payload = b[start:end:end]
	d.events = append(d.events, ev)
	d.spans = append(d.spans, sp)
	return ""
}

func appendStringValue(dst, b []byte, m member) []byte {
	s := b[m.start+1 : m.end-1]
	if m.esc {
		return appendUnescaped(dst, s)
	}
	return append(dst, s...)
}

// finish gives the events their ID and Type: substrings of one string per
// batch, so a store may keep them safely (the payloads it may not keep).
func (d *decoder) finish() {
	if len(d.arena) == 0 {
		return
	}
	s := string(d.arena)
	for i, sp := range d.spans {
		d.events[i].ID = s[sp.id0:sp.id1]
		d.events[i].Type = s[sp.ty0:sp.ty1]
	}
}
