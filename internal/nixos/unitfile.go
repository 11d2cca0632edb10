package nixos

import (
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"
)

// SystemdService is one entry of a NixOS configuration's systemd.services
// (or systemd.timers), as nix-instantiate --json prints it: the options
// NixOS turns into unit file lines. Unknown options are ignored.
type SystemdService struct {
	Description     string         `json:"description"`
	Documentation   []string       `json:"documentation"`
	After           []string       `json:"after"`
	Before          []string       `json:"before"`
	Wants           []string       `json:"wants"`
	Requires        []string       `json:"requires"`
	WantedBy        []string       `json:"wantedBy"`
	RestartTriggers []any          `json:"restartTriggers"`
	ReloadTriggers  []any          `json:"reloadTriggers"`
	Environment     map[string]any `json:"environment"`
	UnitConfig      map[string]any `json:"unitConfig"`
	ServiceConfig   map[string]any `json:"serviceConfig"`
	TimerConfig     map[string]any `json:"timerConfig"`
}

// RenderUnitFile writes svc as the text of a systemd unit file the way
// NixOS renders it (nixos/lib/systemd-lib.nix): [Unit] from description,
// documentation, after/before/wants/requires and unitConfig; [Service] (or
// [Timer] for timerConfig) with one line per value, a list giving one line
// per element, booleans as true/false; and an [Install] section with
// WantedBy=, which NixOS expresses as symlinks instead, so the file can be
// installed on a plain systemd host (or a booted test container) as is.
// The triggers become X-Restart-Triggers= and X-Reload-Triggers= lines,
// which systemd ignores.
func RenderUnitFile(svc SystemdService) (string, error) {
	var b strings.Builder
	b.WriteString("[Unit]\n")
	unit := map[string]any{}
	for k, v := range svc.UnitConfig {
		unit[k] = v
	}
	set := func(key string, v []string) {
		if len(v) > 0 {
			unit[key] = strings.Join(v, " ")
		}
	}
	if svc.Description != "" {
		unit["Description"] = svc.Description
	}
	set("Documentation", svc.Documentation)
	set("After", svc.After)
	set("Before", svc.Before)
	set("Wants", svc.Wants)
	set("Requires", svc.Requires)
	for key, v := range map[string][]any{"X-Restart-Triggers": svc.RestartTriggers, "X-Reload-Triggers": svc.ReloadTriggers} {
		var words []string
		for _, x := range v {
			s, err := unitValue(x)
			if err != nil {
				return "", fmt.Errorf("%s: %w", key, err)
			}
			words = append(words, s)
		}
		set(key, words)
	}
	if err := writeSection(&b, unit); err != nil {
		return "", fmt.Errorf("[Unit]: %w", err)
	}
	if len(svc.ServiceConfig) > 0 || len(svc.Environment) > 0 || len(svc.TimerConfig) == 0 {
		b.WriteString("\n[Service]\n")
		if len(svc.Environment) > 0 {
			var env []any
			for _, k := range slices.Sorted(maps.Keys(svc.Environment)) {
				v, err := unitValue(svc.Environment[k])
				if err != nil {
					return "", fmt.Errorf("environment.%s: %w", k, err)
				}
				q, _ := json.Marshal(k + "=" + v)
				env = append(env, string(q))
			}
			if err := writeSection(&b, map[string]any{"Environment": env}); err != nil {
				return "", err
			}
		}
		if err := writeSection(&b, svc.ServiceConfig); err != nil {
			return "", fmt.Errorf("[Service]: %w", err)
		}
	}
	if len(svc.TimerConfig) > 0 {
		b.WriteString("\n[Timer]\n")
		if err := writeSection(&b, svc.TimerConfig); err != nil {
			return "", fmt.Errorf("[Timer]: %w", err)
		}
	}
	if len(svc.WantedBy) > 0 {
		b.WriteString("\n[Install]\n")
		for _, w := range svc.WantedBy {
			b.WriteString("WantedBy=" + w + "\n")
		}
	}
	return b.String(), nil
}

// writeSection writes key=value lines in key order (as Nix lists attribute
// names), a list as one line per element; a null value writes nothing.
func writeSection(b *strings.Builder, m map[string]any) error {
	for _, k := range slices.Sorted(maps.Keys(m)) {
		vs, ok := m[k].([]any)
		if !ok {
			if m[k] == nil {
				continue
			}
			vs = []any{m[k]}
		}
		for _, v := range vs {
			s, err := unitValue(v)
			if err != nil {
				return fmt.Errorf("%s: %w", k, err)
			}
			if strings.ContainsAny(s, "\n") {
				return fmt.Errorf("%s: a value with a newline: %q", k, s)
			}
			b.WriteString(k + "=" + s + "\n")
		}
	}
	return nil
}

// unitValue is NixOS's toOption: true/false, numbers and strings as text.
func unitValue(v any) (string, error) {
	switch x := v.(type) {
	case bool:
		if x {
			return "true", nil
		}
		return "false", nil
	case string:
		return x, nil
	case json.Number:
		return x.String(), nil
	case float64:
		return strconv.FormatFloat(x, 'f', -1, 64), nil
	case int:
		return strconv.Itoa(x), nil
	default:
		return "", fmt.Errorf("cannot render %T %v as a unit file value", v, v)
	}
}

// ExecArgs splits the value of an Exec*= line (ExecStart=...) into the
// argv systemd runs: %-specifiers resolved (only %% is accepted, since the
// others depend on the unit), then words split at whitespace with "..." and
// '...' quoting and C escapes, then $$ turned into $ in each word ($VAR
// and ${VAR} are refused: the environment is the unit's). Leading
// prefixes (-, @, +, !, :) are refused too.
func ExecArgs(line string) ([]string, error) {
	var spec strings.Builder
	for i := 0; i < len(line); i++ {
		if line[i] != '%' {
			spec.WriteByte(line[i])
			continue
		}
		if i+1 < len(line) && line[i+1] == '%' {
			spec.WriteByte('%')
			i++
			continue
		}
		return nil, fmt.Errorf("exec line %q: specifier %%%s is not resolved here", line, line[i+1:min(i+2, len(line))])
	}
	words, err := splitExecWords(spec.String())
	if err != nil {
		return nil, fmt.Errorf("exec line %q: %w", line, err)
	}
	if len(words) == 0 {
		return nil, fmt.Errorf("exec line %q: empty", line)
	}
	if words[0] == "" || strings.ContainsAny(words[0][:1], "-@+!:") {
		return nil, fmt.Errorf("exec line %q: an empty program or a prefix (-, @, +, !, :), which is not handled", line)
	}
	for i, w := range words {
		var out strings.Builder
		for j := 0; j < len(w); j++ {
			if w[j] != '$' {
				out.WriteByte(w[j])
				continue
			}
			if j+1 < len(w) && w[j+1] == '$' {
				out.WriteByte('$')
				j++
				continue
			}
			return nil, fmt.Errorf("exec line %q: word %q expands a variable", line, w)
		}
		words[i] = out.String()
	}
	return words, nil
}

// splitExecWords is systemd's extract_first_word with EXTRACT_UNQUOTE and
// EXTRACT_CUNESCAPE, repeated.
func splitExecWords(s string) ([]string, error) {
	var words []string
	var cur strings.Builder
	inWord := false
	var quote byte
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case quote == 0 && (c == ' ' || c == '\t' || c == '\n'):
			if inWord {
				words = append(words, cur.String())
				cur.Reset()
				inWord = false
			}
		case c == quote:
			quote = 0
		case quote == 0 && (c == '"' || c == '\''):
			quote = c
			inWord = true
		case c == '\\':
			n, r, err := cunescape(s[i+1:])
			if err != nil {
				return nil, err
			}
			cur.WriteString(r)
			i += n
			inWord = true
		default:
			cur.WriteByte(c)
			inWord = true
		}
	}
	if quote != 0 {
		return nil, fmt.Errorf("unterminated %c quote", quote)
	}
	if inWord {
		words = append(words, cur.String())
	}
	return words, nil
}

// cunescape decodes the escape after a backslash: how many bytes it used
// and what they stand for.
func cunescape(s string) (int, string, error) {
	if s == "" {
		return 0, "", fmt.Errorf("a trailing backslash")
	}
	simple := map[byte]string{'a': "\a", 'b': "\b", 'f': "\f", 'n': "\n", 'r': "\r", 't': "\t", 'v': "\v",
		'\\': "\\", '"': "\"", '\'': "'", 's': " "}
	if r, ok := simple[s[0]]; ok {
		return 1, r, nil
	}
	hex := func(n int) (int, string, error) {
		if len(s) < 1+n {
			return 0, "", fmt.Errorf("a short \\%c escape", s[0])
		}
		v, err := strconv.ParseUint(s[1:1+n], 16, 32)
		if err != nil || v == 0 {
			return 0, "", fmt.Errorf("a bad \\%c escape %q", s[0], s[:1+n])
		}
		if s[0] == 'x' {
			return 1 + n, string([]byte{byte(v)}), nil
		}
		if !utf8.ValidRune(rune(v)) {
			return 0, "", fmt.Errorf("a bad \\%c escape %q", s[0], s[:1+n])
		}
		return 1 + n, string(rune(v)), nil
	}
	switch s[0] {
	case 'x':
		return hex(2)
	case 'u':
		return hex(4)
	case 'U':
		return hex(8)
	case '0', '1', '2', '3', '4', '5', '6', '7':
		if len(s) < 3 {
			return 0, "", fmt.Errorf("a short octal escape")
		}
		v, err := strconv.ParseUint(s[:3], 8, 8)
		if err != nil || v == 0 {
			return 0, "", fmt.Errorf("a bad octal escape %q", s[:3])
		}
		return 3, string([]byte{byte(v)}), nil
	}
	return 0, "", fmt.Errorf("an unknown escape \\%c", s[0])
}
