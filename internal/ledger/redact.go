package ledger

import (
	"bytes"
	"encoding/json"
	"regexp"
	"strings"
)

// Redacted replaces every secret value that Redact and RedactText remove.
const Redacted = "[redacted]"

// secretWords are matched against object keys after lower-casing and
// removing '_', '-', '.' and spaces; a key containing any of them is secret.
var secretWords = []string{
	"privatekey", "privkey", "presharedkey", "psk",
	"secret", "token", "password", "passwd", "passphrase",
	"apikey", "credential", "authorization", "cookie",
}

// IsSecretKey reports whether an object key names a secret value
// (private_key, PresharedKey, client-secret, api_token, password, psk, ...).
func IsSecretKey(key string) bool {
	var b strings.Builder
	for _, r := range strings.ToLower(key) {
		switch r {
		case '_', '-', '.', ' ':
			continue
		}
		b.WriteRune(r)
	}
	k := b.String()
	for _, w := range secretWords {
		if strings.Contains(k, w) {
			return true
		}
	}
	return false
}

// Redact returns raw with the value of every object member whose key looks
// secret (see IsSecretKey) replaced by "[redacted]", at any depth, and with
// RedactText applied to every string value. The result is compact JSON;
// when something was redacted its object keys are sorted. Input that is not valid JSON is replaced as a whole by
// the JSON string "[redacted: invalid JSON]", so that nothing unparsed can
// leak. Empty input is returned unchanged.
func Redact(raw json.RawMessage) json.RawMessage {
	if len(bytes.TrimSpace(raw)) == 0 {
		return raw
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil || dec.More() {
		return json.RawMessage(`"[redacted: invalid JSON]"`)
	}
	changed := false
	v = redactValue(v, &changed)
	if !changed {
		// Nothing secret: keep the caller's member order, only compact.
		var buf bytes.Buffer
		if err := json.Compact(&buf, raw); err == nil {
			return buf.Bytes()
		}
	}
	out, err := marshalCompact(v)
	if err != nil {
		return json.RawMessage(`"[redacted: invalid JSON]"`)
	}
	return out
}

func redactValue(v any, changed *bool) any {
	switch t := v.(type) {
	case map[string]any:
		for k, x := range t {
			if x != nil && IsSecretKey(k) {
				t[k] = Redacted
				*changed = true
				continue
			}
			t[k] = redactValue(x, changed)
		}
		return t
	case []any:
		for i, x := range t {
			t[i] = redactValue(x, changed)
		}
		return t
	case string:
		r := RedactText(t)
		if r != t {
			*changed = true
		}
		return r
	default:
		return v
	}
}

const secretKW = `(?:private[_-]?key|priv[_-]?key|pre[_-]?shared[_-]?key|psk|secret|token|password|passwd|passphrase|api[_-]?key|credential)`

var (
	// key=value, key: value, "key": "value", with the key containing a
	// secret word (wg_private_key=..., PresharedKey = ..., "token":"...").
	textSecretRE = regexp.MustCompile(`(?i)([A-Za-z0-9_.\-]*` + secretKW + `[A-Za-z0-9_.\-]*["']?\s*[:=]\s*)(\[redacted\]|"(?:[^"\\]|\\.)*"|'[^']*'|[^\s,;&}\]"']+)`)
	bearerRE     = regexp.MustCompile(`(?i)\b(bearer|basic)(\s+)[A-Za-z0-9._~+/=\-]+`)
)

// RedactText removes secret values from free text: "name=value",
// "name: value" and JSON-style `"name": "value"` where name contains a
// secret word, and HTTP "Bearer"/"Basic" credentials.
func RedactText(s string) string {
	if !mayHoldSecret(s) {
		return s
	}
	s = textSecretRE.ReplaceAllStringFunc(s, func(m string) string {
		sub := textSecretRE.FindStringSubmatch(m)
		val := sub[2]
		switch {
		case strings.HasPrefix(val, `"`):
			return sub[1] + `"` + Redacted + `"`
		case strings.HasPrefix(val, `'`):
			return sub[1] + `'` + Redacted + `'`
		case val == Redacted:
			return m
		}
		return sub[1] + Redacted
	})
	return bearerRE.ReplaceAllString(s, "${1}${2}"+Redacted)
}

// textHints are substrings (lower case) that every match of textSecretRE
// or bearerRE contains; strings without any skip the regular expressions.
var textHints = []string{"key", "psk", "secret", "token", "passw", "passphrase", "credential", "bearer", "basic"}

func mayHoldSecret(s string) bool {
	if len(s) < 4 {
		return false
	}
	ls := strings.ToLower(s)
	for _, h := range textHints {
		if strings.Contains(ls, h) {
			return true
		}
	}
	return false
}

// marshalCompact encodes v as compact JSON without HTML escaping.
func marshalCompact(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}
