package loader

import (
	"encoding/binary"
	"math/bits"
	"unicode"
	"unicode/utf16"
	"unicode/utf8"
)

// This file holds the hand-written JSON validator. It accepts exactly what
// encoding/json's json.Valid accepts, except that it also requires valid
// UTF-8 (RFC 8259 §8.1; a store such as PostgreSQL would refuse it later and
// the batch must fail now, whole, not half-way), and it extracts the
// top-level "id", "type" and "ts" members of an event object on the way.
// FuzzNDJSON and FuzzJSONArray hold it to encoding/json as an oracle.
//
// It never allocates: nesting is tracked with a counter stack that is reused
// between calls, strings are skipped eight bytes at a time, and member values
// are returned as spans of the input.

// maxNestingDepth is encoding/json's limit on nested arrays and objects.
const maxNestingDepth = 10000

// syntaxError is a JSON error found while scanning; off is the byte offset
// in the scanned slice.
type syntaxError struct {
	msg string
	off int
}

func (e *syntaxError) Error() string { return e.msg }

func synErr(msg string, off int) *syntaxError { return &syntaxError{msg: msg, off: off} }

// field names of the members the loader reads.
const (
	fieldID = iota
	fieldType
	fieldTS
	numFields
)

// member is the value span of one top-level member of the event object.
type member struct {
	start, end int  // b[start:end] is the value, quotes included for strings
	esc        bool // the string value holds escape sequences
	present    bool
}

// scanner validates JSON values. Its zero value is ready to use; it is not
// safe for concurrent use.
type scanner struct {
	stack   []byte            // open containers of skipValue: '{' or '['
	fields  [numFields]member // the last object's id/type/ts (the last one wins, as in encoding/json)
	scratch []byte            // unescaped keys
}

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }

func skipSpace(b []byte, i int) int {
	for i < len(b) && isSpace(b[i]) {
		i++
	}
	return i
}

const (
	lsb = 0x0101010101010101
	msb = 0x8080808080808080
)

// specialMask has the high bit set in the lowest byte of x that is '"',
// '\\', a control character (< 0x20) or not ASCII (>= 0x80). Bits above
// the lowest flagged byte may be false positives (borrow propagation); the
// lowest one is exact, which is all scanString uses.
func specialMask(x uint64) uint64 {
	q := x ^ (lsb * '"')
	s := x ^ (lsb * '\\')
	return (((q - lsb) &^ q) | ((s - lsb) &^ s) | ((x - lsb*0x20) &^ x) | x) & msb
}

// scanString validates the string starting at b[i] == '"' and returns the
// index just past its closing quote and whether it contains escapes.
func scanString(b []byte, i int) (end int, esc bool, err *syntaxError) {
	start := i
	i++
	for {
		for i+8 <= len(b) {
			if m := specialMask(binary.LittleEndian.Uint64(b[i:])); m != 0 {
				i += bits.TrailingZeros64(m) >> 3
				break
			}
			i += 8
		}
		if i >= len(b) {
			return 0, false, synErr("unterminated string", start)
		}
		switch c := b[i]; {
		case c == '"':
			return i + 1, esc, nil
		case c == '\\':
			esc = true
			if i+1 >= len(b) {
				return 0, false, synErr("unterminated string", start)
			}
			switch b[i+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				i += 2
			case 'u':
				if i+6 > len(b) || hex4(b[i+2:i+6]) < 0 {
					return 0, false, synErr("invalid \\u escape in string", i)
				}
				i += 6
			default:
				return 0, false, synErr("invalid escape in string", i)
			}
		case c < 0x20:
			return 0, false, synErr("control character in string", i)
		case c >= 0x80:
			r, size := utf8.DecodeRune(b[i:])
			if r == utf8.RuneError && size == 1 {
				return 0, false, synErr("invalid UTF-8 in string", i)
			}
			i += size
		default:
			i++
		}
	}
}

// hex4 decodes four hex digits, or returns -1.
func hex4(b []byte) rune {
	var r rune
	for _, c := range b[:4] {
		switch {
		case '0' <= c && c <= '9':
			c -= '0'
		case 'a' <= c && c <= 'f':
			c = c - 'a' + 10
		case 'A' <= c && c <= 'F':
			c = c - 'A' + 10
		default:
			return -1
		}
		r = r<<4 | rune(c)
	}
	return r
}

// appendUnescaped appends the decoded contents of a validated JSON string
// (s excludes the quotes) to dst, exactly as encoding/json decodes it:
// a \u escape of an unpaired surrogate becomes U+FFFD.
func appendUnescaped(dst, s []byte) []byte {
	for i := 0; i < len(s); {
		c := s[i]
		if c != '\\' {
			j := i + 1
			for j < len(s) && s[j] != '\\' {
				j++
			}
			dst = append(dst, s[i:j]...)
			i = j
			continue
		}
		e := s[i+1]
		i += 2
		switch e {
		case 'b':
			dst = append(dst, '\b')
		case 'f':
			dst = append(dst, '\f')
		case 'n':
			dst = append(dst, '\n')
		case 'r':
			dst = append(dst, '\r')
		case 't':
			dst = append(dst, '\t')
		case 'u':
			r := hex4(s[i:])
			i += 4
			if utf16.IsSurrogate(r) {
				if i+6 <= len(s) && s[i] == '\\' && s[i+1] == 'u' {
					if d := utf16.DecodeRune(r, hex4(s[i+2:])); d != unicode.ReplacementChar {
						dst = utf8.AppendRune(dst, d)
						i += 6
						continue
					}
				}
				r = unicode.ReplacementChar
			}
			dst = utf8.AppendRune(dst, r)
		default: // '"', '\\', '/'
			dst = append(dst, e)
		}
	}
	return dst
}

// scanNumber validates the number starting at b[i].
func scanNumber(b []byte, i int) (int, *syntaxError) {
	start := i
	if b[i] == '-' {
		i++
	}
	switch {
	case i < len(b) && b[i] == '0':
		i++
	case i < len(b) && '1' <= b[i] && b[i] <= '9':
		i++
		for i < len(b) && '0' <= b[i] && b[i] <= '9' {
			i++
		}
	default:
		return 0, synErr("invalid number", start)
	}
	if i < len(b) && b[i] == '.' {
		i++
		if i >= len(b) || b[i] < '0' || b[i] > '9' {
			return 0, synErr("invalid number", start)
		}
		for i < len(b) && '0' <= b[i] && b[i] <= '9' {
			i++
		}
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		if i >= len(b) || b[i] < '0' || b[i] > '9' {
			return 0, synErr("invalid number", start)
		}
		for i < len(b) && '0' <= b[i] && b[i] <= '9' {
			i++
		}
	}
	return i, nil
}

func scanLiteral(b []byte, i int, lit string) (int, *syntaxError) {
	if len(b)-i < len(lit) || string(b[i:i+len(lit)]) != lit {
		return 0, synErr("invalid literal", i)
	}
	return i + len(lit), nil
}

// objectKey scans `"key" :` at b[i] and returns the key's span and the
// index of the (non-space) start of the member's value.
func objectKey(b []byte, i int) (ks, ke int, esc bool, next int, err *syntaxError) {
	if i >= len(b) {
		return 0, 0, false, 0, synErr("unexpected end of input, expected an object key", i)
	}
	if b[i] != '"' {
		return 0, 0, false, 0, synErr("expected a string object key", i)
	}
	ks = i
	ke, esc, err = scanString(b, i)
	if err != nil {
		return 0, 0, false, 0, err
	}
	i = skipSpace(b, ke)
	if i >= len(b) || b[i] != ':' {
		return 0, 0, false, 0, synErr("expected ':' after object key", i)
	}
	return ks, ke, esc, skipSpace(b, i+1), nil
}

// skipValue validates the JSON value starting at b[i] (not whitespace) and
// returns the index just past it. depth is the number of containers already
// open around the value.
func (sc *scanner) skipValue(b []byte, i, depth int) (int, *syntaxError) {
	stack := sc.stack[:0]
	defer func() { sc.stack = stack[:0] }()
	var err *syntaxError
	for {
		// A value starts at b[i].
		if i >= len(b) {
			return 0, synErr("unexpected end of input, expected a value", i)
		}
		switch c := b[i]; c {
		case '"':
			i, _, err = scanString(b, i)
		case '{', '[':
			if depth+len(stack)+1 > maxNestingDepth {
				return 0, synErr("exceeded max nesting depth", i)
			}
			j := skipSpace(b, i+1)
			if j < len(b) && b[j] == c+2 { // '{'+2 == '}', '['+2 == ']'
				i = j + 1
				break
			}
			stack = append(stack, c)
			i = j
			if c == '{' {
				_, _, _, i, err = objectKey(b, i)
				if err != nil {
					return 0, err
				}
			}
			continue
		case 't':
			i, err = scanLiteral(b, i, "true")
		case 'f':
			i, err = scanLiteral(b, i, "false")
		case 'n':
			i, err = scanLiteral(b, i, "null")
		default:
			if c == '-' || '0' <= c && c <= '9' {
				i, err = scanNumber(b, i)
			} else {
				err = synErr("invalid character, expected a value", i)
			}
		}
		if err != nil {
			return 0, err
		}
		// After a value: close containers until one continues with ','.
		for {
			if len(stack) == 0 {
				return i, nil
			}
			i = skipSpace(b, i)
			if i >= len(b) {
				return 0, synErr("unexpected end of input in array or object", i)
			}
			top := stack[len(stack)-1]
			c := b[i]
			if c == ',' {
				i = skipSpace(b, i+1)
				if top == '{' {
					_, _, _, i, err = objectKey(b, i)
					if err != nil {
						return 0, err
					}
				}
				break
			}
			if c == top+2 {
				stack = stack[:len(stack)-1]
				i++
				continue
			}
			if top == '{' {
				return 0, synErr("expected ',' or '}' in object", i)
			}
			return 0, synErr("expected ',' or ']' in array", i)
		}
	}
}

// whichField reports which of the read members the key b[ks:ke] (quotes
// included) names, or -1.
func (sc *scanner) whichField(b []byte, ks, ke int, esc bool) int {
	k := b[ks+1 : ke-1]
	if esc {
		if len(k) > 4*6 { // longest spelling of a read name: "type" as four \u escapes
			return -1
		}
		sc.scratch = appendUnescaped(sc.scratch[:0], k)
		k = sc.scratch
	}
	switch string(k) {
	case "id":
		return fieldID
	case "type":
		return fieldType
	case "ts":
		return fieldTS
	}
	return -1
}

// scanObject validates the JSON object starting at b[i] (not whitespace)
// and returns the index just past it. It records the spans of the top-level
// "id", "type" and "ts" members in sc.fields. depth is the number of
// containers open around the object.
func (sc *scanner) scanObject(b []byte, i, depth int) (int, *syntaxError) {
	sc.fields = [numFields]member{}
	if i >= len(b) {
		return 0, synErr("unexpected end of input, expected a JSON object", i)
	}
	if b[i] != '{' {
		return 0, synErr("not a JSON object", i)
	}
	if depth+1 > maxNestingDepth {
		return 0, synErr("exceeded max nesting depth", i)
	}
	i = skipSpace(b, i+1)
	if i < len(b) && b[i] == '}' {
		return i + 1, nil
	}
	for {
		ks, ke, kesc, vs, err := objectKey(b, i)
		if err != nil {
			return 0, err
		}
		f := sc.whichField(b, ks, ke, kesc)
		var ve int
		var vesc bool
		if vs < len(b) && b[vs] == '"' { // the common case, without skipValue's set-up
			ve, vesc, err = scanString(b, vs)
		} else {
			ve, err = sc.skipValue(b, vs, depth+1)
		}
		if err != nil {
			return 0, err
		}
		if f >= 0 {
			sc.fields[f] = member{start: vs, end: ve, esc: vesc, present: true}
		}
		i = skipSpace(b, ve)
		if i >= len(b) {
			return 0, synErr("unexpected end of input in object", i)
		}
		switch b[i] {
		case ',':
			i = skipSpace(b, i+1)
		case '}':
			return i + 1, nil
		default:
			return 0, synErr("expected ',' or '}' in object", i)
		}
	}
}
