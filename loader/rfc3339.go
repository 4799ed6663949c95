package loader

import "time"

// parseTS parses an event's "ts" exactly as time.Parse(time.RFC3339, s)
// does. The common form, UTC with 'Z' and at most nine fractional digits,
// takes a fast path (a fifth of the decoding time otherwise); any other
// form goes to time.Parse. FuzzNDJSON compares both with time.Parse.
func parseTS(s []byte) (time.Time, error) {
	if t, ok := parseRFC3339UTC(s); ok {
		return t, nil
	}
	return time.Parse(time.RFC3339, string(s))
}

// parseRFC3339UTC parses "YYYY-MM-DDTHH:MM:SS[.F{1,9}]Z" with the range
// checks of the time package's RFC 3339 parser, or reports false.
func parseRFC3339UTC(s []byte) (time.Time, bool) {
	n := len(s)
	if n < 20 || n > 30 || s[n-1] != 'Z' ||
		s[4] != '-' || s[7] != '-' || s[10] != 'T' || s[13] != ':' || s[16] != ':' {
		return time.Time{}, false
	}
	d2 := func(i int) int { // two digits at s[i:], or -1
		a, b := s[i]-'0', s[i+1]-'0'
		if a > 9 || b > 9 {
			return -1
		}
		return int(a)*10 + int(b)
	}
	hi, lo := d2(0), d2(2)
	year, month, day := hi*100+lo, d2(5), d2(8)
	hour, minute, sec := d2(11), d2(14), d2(17)
	if hi < 0 || lo < 0 || month < 1 || month > 12 || day < 1 || day > daysIn(month, year) ||
		hour < 0 || hour > 23 || minute < 0 || minute > 59 || sec < 0 || sec > 59 {
		return time.Time{}, false
	}
	nsec := 0
	if n > 20 {
		if n == 21 || s[19] != '.' {
			return time.Time{}, false
		}
		digits := 0
		for _, c := range s[20 : n-1] {
			if c -= '0'; c > 9 {
				return time.Time{}, false
			}
			nsec = nsec*10 + int(c)
			digits++
		}
		for ; digits < 9; digits++ {
			nsec *= 10
		}
	}
	days := daysFromCivil(year, month, day)
	return time.Unix(days*86400+int64(hour*3600+minute*60+sec), int64(nsec)).UTC(), true
}

func daysIn(month, year int) int {
	switch month {
	case 2:
		if year%4 == 0 && (year%100 != 0 || year%400 == 0) {
			return 29
		}
		return 28
	case 4, 6, 9, 11:
		return 30
	}
	return 31
}

// daysFromCivil returns the days from 1970-01-01 to the given proleptic
// Gregorian date (H. Hinnant's algorithm).
func daysFromCivil(y, m, d int) int64 {
	if m <= 2 {
		y--
	}
	era := y / 400
	if y < 0 && y%400 != 0 {
		era--
	}
	yoe := y - era*400
	mp := (m + 9) % 12
	doy := (153*mp+2)/5 + d - 1
	doe := yoe*365 + yoe/4 - yoe/100 + doy
	return int64(era)*146097 + int64(doe) - 719468
}
