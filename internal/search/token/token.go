// Package token splits D-Bus, systemd and plain-language text into search terms.
package token

import (
	"strings"
	"unicode"
	"unicode/utf8"
)

// Tokens splits text into normalised search terms the way D-Bus and
// systemd names are written:
//
//   - separators: anything not a letter or digit (dots, slashes, hyphens,
//     spaces, colons...), and underscores;
//   - systemd's object path escapes are decoded first: "_2e" is ".", "_2d"
//     is "-", "_40" is "@" (only escapes of printable ASCII are decoded, so
//     "foo_bar" stays two words);
//   - CamelCase: "SetStaticHostname" gives set, static, hostname and the
//     compound "setstatichostname"; "NTPSynchronized" gives ntp,
//     synchronized; "X11Keyboard" gives x11, keyboard;
//   - letters and digits: "item0042" gives item0042, item and 42 (leading
//     zeros dropped);
//   - lower case, then a light suffix stemmer (units→unit, changed→chang,
//     stopped→stop) so word forms meet.
//
// Stop words ("the", "which", "of") are dropped. The result is in text
// order and may repeat a term.
func Tokens(text string) []string {
	return AppendTokens(nil, text)
}

// AppendTokens appends the terms of text to out (see Tokens).
func AppendTokens(out []string, text string) []string {
	text = unescapePath(text)
	start := -1
	for i, r := range text {
		alnum := unicode.IsLetter(r) || unicode.IsDigit(r)
		if alnum && start < 0 {
			start = i
		}
		if !alnum && start >= 0 {
			out = appendWord(out, text[start:i])
			start = -1
		}
	}
	if start >= 0 {
		out = appendWord(out, text[start:])
	}
	return out
}

// maxWord bounds one word; longer runs (base64 blobs, hashes) are cut.
const maxWord = 64

func appendWord(out []string, w string) []string {
	if len(w) > maxWord {
		w = w[:maxWord]
		for !utf8.ValidString(w) && len(w) > 0 {
			w = w[:len(w)-1]
		}
	}
	parts := splitCamel(w)
	if len(parts) > 1 {
		for _, p := range parts {
			out = appendTerm(out, p)
		}
		// The compound keeps exact-name queries exact ("settimezone").
		return appendTerm(out, w)
	}
	return appendTerm(out, w)
}

func appendTerm(out []string, w string) []string {
	t := Normalize(w)
	if t == "" || stopWords[t] {
		return out
	}
	out = append(out, t)
	// item0042 → item, 42: names with numbers are searched by either part.
	if i := strings.IndexFunc(t, unicode.IsDigit); i > 0 {
		if j := strings.LastIndexFunc(t, unicode.IsLetter); j < i && i >= 2 {
			out = append(out, t[:i])
			n := strings.TrimLeft(t[i:], "0")
			if n == "" {
				n = "0"
			}
			out = append(out, n)
		}
	} else if len(t) > 1 && t[0] == '0' && isDigits(t) {
		n := strings.TrimLeft(t, "0")
		if n == "" {
			n = "0"
		}
		out = append(out, n)
	}
	return out
}

func isDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// splitCamel splits a word at case changes: "SetNTP" → Set, NTP;
// "NTPSynchronized" → NTP, Synchronized; "X11Keyboard" → X11, Keyboard.
// Digits stay with the letters before them.
func splitCamel(w string) []string {
	rs := []rune(w)
	var parts []string
	start := 0
	for i := 1; i < len(rs); i++ {
		prev, cur := rs[i-1], rs[i]
		split := false
		switch {
		case unicode.IsLower(prev) && unicode.IsUpper(cur):
			split = true
		case unicode.IsDigit(prev) && unicode.IsUpper(cur):
			split = true
		case unicode.IsUpper(prev) && unicode.IsUpper(cur) && i+1 < len(rs) && unicode.IsLower(rs[i+1]):
			// the last capital of an acronym starts the next word,
			// unless the acronym would be a single letter (VConsole).
			split = i-start > 1
		}
		if split {
			parts = append(parts, string(rs[start:i]))
			start = i
		}
	}
	return append(parts, string(rs[start:]))
}

// Normalize lower-cases and stems one word.
func Normalize(w string) string {
	return stem(strings.ToLower(w))
}

// stem strips common English suffixes: plural s, -ing, -ed, a final e, and
// a doubled final consonant left behind (stopped → stop).
func stem(w string) string {
	if len(w) <= 3 || !isASCIILetters(w) {
		return w
	}
	if strings.HasSuffix(w, "s") && !strings.HasSuffix(w, "ss") && !strings.HasSuffix(w, "us") && !strings.HasSuffix(w, "is") {
		w = w[:len(w)-1]
		if strings.HasSuffix(w, "ie") && len(w) > 4 {
			w = w[:len(w)-2] + "y"
		}
	}
	// -ization, -ation: synchronization meets synchronize(d),
	// configuration meets configure(d); short stems stay (location).
	if strings.HasSuffix(w, "ization") && len(w) >= 10 {
		return w[:len(w)-5]
	}
	if strings.HasSuffix(w, "ation") && len(w)-5 >= 5 {
		return w[:len(w)-5]
	}
	stripped := false
	for _, suf := range []string{"ing", "ed"} {
		if strings.HasSuffix(w, suf) && len(w)-len(suf) >= 3 {
			w = w[:len(w)-len(suf)]
			stripped = true
			break
		}
	}
	if stripped && len(w) >= 4 {
		a, b := w[len(w)-1], w[len(w)-2]
		if a == b && !strings.ContainsRune("lsz", rune(a)) && !strings.ContainsRune("aeiou", rune(a)) {
			w = w[:len(w)-1]
		}
	}
	if strings.HasSuffix(w, "e") && len(w) > 4 {
		w = w[:len(w)-1]
	}
	return w
}

func isASCIILetters(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 'a' || s[i] > 'z' {
			return false
		}
	}
	return true
}

// unescapePath decodes systemd's bus path escapes ("_2e" → "."): an
// underscore followed by two hex digits naming printable ASCII.
func unescapePath(s string) string {
	if !strings.Contains(s, "_") {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '_' && i+2 < len(s) {
			if v, ok := hexByte(s[i+1], s[i+2]); ok && v >= 0x20 && v < 0x7f {
				b.WriteByte(v)
				i += 2
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func hexByte(a, b byte) (byte, bool) {
	x, ok1 := hexDigit(a)
	y, ok2 := hexDigit(b)
	return x<<4 | y, ok1 && ok2
}

func hexDigit(c byte) (byte, bool) {
	switch {
	case c >= '0' && c <= '9':
		return c - '0', true
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10, true
	case c >= 'A' && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

// stopWords are dropped from documents and queries alike.
var stopWords = map[string]bool{}

func init() {
	for _, w := range strings.Fields(`a an the of to is are was were be been which what who whom how do doe does
		i me my we our you your it its this that these those on in at for and or with by from as
		there here into about please show find tell give
		where when whose could would should`) {
		stopWords[w] = true
		stopWords[Normalize(w)] = true
	}
}

// IsStopWord reports whether a word is dropped as a stop word.
func IsStopWord(w string) bool { return stopWords[Normalize(w)] }
