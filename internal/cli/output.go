package cli

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"

	"golang.org/x/term"
	"gopkg.in/yaml.v3"

	"github.com/op-dbus/op-dbus/internal/plugin"
)

func isTerminal(v any) bool {
	f, ok := v.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// writeData prints v as indented JSON or as YAML.
func writeData(w io.Writer, format string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	if format == "yaml" {
		// Through a generic value so YAML keys follow the JSON names.
		var g any
		if err := json.Unmarshal(b, &g); err != nil {
			return err
		}
		enc := yaml.NewEncoder(w)
		enc.SetIndent(2)
		if err := enc.Encode(g); err != nil {
			return err
		}
		return enc.Close()
	}
	_, err = fmt.Fprintf(w, "%s\n", b)
	return err
}

// palette colors text for a terminal and is a no-op otherwise.
type palette struct{ on bool }

func (g *globals) colors() palette {
	return palette{on: g.stdoutTerminal && !g.noColor && os.Getenv("NO_COLOR") == "" && os.Getenv("TERM") != "dumb"}
}

func (p palette) wrap(code, s string) string {
	if !p.on {
		return s
	}
	return "\x1b[" + code + "m" + s + "\x1b[0m"
}

func (p palette) green(s string) string  { return p.wrap("32", s) }
func (p palette) red(s string) string    { return p.wrap("31", s) }
func (p palette) yellow(s string) string { return p.wrap("33", s) }
func (p palette) bold(s string) string   { return p.wrap("1", s) }
func (p palette) dim(s string) string    { return p.wrap("2", s) }

// writeList prints a list for machines: [] rather than null when empty.
func writeList[T any](g *globals, format string, xs []T) error {
	if xs == nil {
		xs = []T{}
	}
	return writeData(g.stdout, format, xs)
}

func show(v any) string { return plugin.Show(v) }

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

// confirm asks on the terminal; it is only called when stdin is one.
func confirm(g *globals, question string) bool {
	fmt.Fprintf(g.stdout, "%s [y/N] ", question)
	line, _ := bufio.NewReader(g.stdin).ReadString('\n')
	switch strings.ToLower(strings.TrimSpace(line)) {
	case "y", "yes":
		return true
	}
	return false
}
