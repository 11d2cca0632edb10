package nixos

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/op-dbus/op-dbus/internal/testbed"
)

// needNix returns nix-instantiate, skips without it, and fails in CI.
func needNix(t *testing.T) string {
	t.Helper()
	return testbed.Program(t, "nix-instantiate", "nix-bin")
}

// nixEval evaluates the Nix file at path strictly and returns its JSON.
func nixEval(t *testing.T, path string) []byte {
	t.Helper()
	cmd := exec.Command(needNix(t), "--eval", "--strict", "--json", path)
	cmd.Env = append(os.Environ(), "NIX_STATE_DIR="+t.TempDir(), "HOME="+t.TempDir())
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("nix-instantiate --eval %s: %v\n%s", path, err, stderr.String())
	}
	return out
}

func nixParse(t *testing.T, path string) {
	t.Helper()
	cmd := exec.Command(needNix(t), "--parse", path)
	cmd.Env = append(os.Environ(), "NIX_STATE_DIR="+t.TempDir(), "HOME="+t.TempDir())
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("nix-instantiate --parse %s: %v\n%s", path, err, out)
	}
}

// canonical is v as compact JSON with sorted keys, numbers kept exact.
func canonical(t *testing.T, b []byte) string {
	t.Helper()
	v, err := decodeTree(b)
	if err != nil {
		t.Fatalf("%v\n%s", err, b)
	}
	var out bytes.Buffer
	enc := json.NewEncoder(&out)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		t.Fatal(err)
	}
	return out.String()
}

func TestRender(t *testing.T) {
	for _, c := range []struct {
		in   any
		want string
	}{
		{nil, "null"},
		{true, "true"},
		{json.Number("42"), "42"},
		{json.Number("-7"), "(-7)"},
		{json.Number("-9223372036854775808"), "(-9223372036854775807 - 1)"},
		{json.Number("1.5"), "1.5"},
		{2.0, "2.0"},
		{"plain", `"plain"`},
		{"a\"b\\c${d}$e\n\t\r", `"a\"b\\c\${d}$e\n\t\r"`},
		{[]any{}, "[ ]"},
		{[]any{"x"}, `[ "x" ]`},
		{[]any{json.Number("1"), json.Number("-2")}, "[\n  1\n  (-2)\n]"},
		{map[string]any{}, "{ }"},
		{map[string]any{"b": true, "a": map[string]any{"x y": "z"}}, "{\n  a = {\n    \"x y\" = \"z\";\n  };\n  b = true;\n}"},
		{map[string]any{"or": 1, "in": 2, "": 3, "1a": 4, "a'-_1": 5}, "{\n  \"\" = 3;\n  \"1a\" = 4;\n  a'-_1 = 5;\n  \"in\" = 2;\n  \"or\" = 1;\n}"},
	} {
		got, err := Render(c.in)
		if err != nil || got != c.want {
			t.Errorf("Render(%#v) = %q, %v; want %q", c.in, got, err, c.want)
		}
	}
	if _, err := Render("a\x00b"); err == nil {
		t.Error("a NUL byte was rendered")
	}
}

// awkward strings and names that must survive Nix unchanged.
var awkward = []string{
	"", "plain", `"`, `\`, `\\`, `\"`, "${", "${x}", "\\${x}", "$${x}", "$", "a$", "$$", "${${}}",
	"line1\nline2", "\r\n\t", "''", "'''", "''${x}", "#not a comment", "/* c */", "ü → 日本", "\x01\x7f",
	"x;y = 1;", "{ }", "\\n", "a\\", "end${",
}

func TestEscapingEvaluatesToTheSameString(t *testing.T) {
	needNix(t)
	tree := map[string]any{}
	for i, s := range awkward {
		tree[s] = map[string]any{"v": s, "i": json.Number(strings.Repeat("1", 1+i%18))}
	}
	tree["list"] = append([]any{}, func() []any {
		l := []any{}
		for _, s := range awkward {
			l = append(l, s)
		}
		return l
	}()...)
	tree["numbers"] = []any{json.Number("0"), json.Number("-1"), json.Number("9223372036854775807"), json.Number("-9223372036854775808"), nil, true, false}
	src, err := Render(tree)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "v.nix")
	if err := os.WriteFile(p, []byte(src+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	in, _ := json.Marshal(tree)
	if got, want := canonical(t, nixEval(t, p)), canonical(t, in); got != want {
		t.Fatalf("evaluated value differs\n got %s\nwant %s\nsource:\n%s", got, want, src)
	}
}
