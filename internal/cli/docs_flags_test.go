package cli

import (
	"context"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/op-dbus/op-dbus/internal/control"
	"github.com/op-dbus/op-dbus/internal/engine"
	"github.com/op-dbus/op-dbus/internal/mcpserver"
	"github.com/op-dbus/op-dbus/internal/plugin"

	// The plugins, registered as cmd/op-dbus registers them.
	_ "github.com/op-dbus/op-dbus/internal/plugins/dbus"
	_ "github.com/op-dbus/op-dbus/internal/plugins/hostname"
	_ "github.com/op-dbus/op-dbus/internal/plugins/locale"
	_ "github.com/op-dbus/op-dbus/internal/plugins/network"
	_ "github.com/op-dbus/op-dbus/internal/plugins/networkmanager"
	_ "github.com/op-dbus/op-dbus/internal/plugins/ovs"
	_ "github.com/op-dbus/op-dbus/internal/plugins/systemd"
	_ "github.com/op-dbus/op-dbus/internal/plugins/timedate"
	_ "github.com/op-dbus/op-dbus/internal/plugins/wireguard"
)

// The documentation and the help text name op-dbus's flags and commands;
// these tests keep every such name real. They build the command tree with
// newRoot (so every command, every local and persistent flag, hidden ones
// included, plus cobra's own --help, --version, help and completion) and
// check the text against it.
//
// The rule for Markdown (README.md, docs/*.md), designed so that other
// tools' flags (busctl --user, systemctl --user, nmcli, ovs-vsctl --db,
// go test -run, nix-instantiate --eval, curl -H ...) never count:
//
//  1. Only code is read: inline code spans (`...`, also when they wrap
//     onto the next line; `\|` in a table cell is a `|`) and the lines of
//     fenced and indented code blocks. A code-block line ending in `\`
//     continues on the next line, and so does an op-dbus line followed by a
//     line that starts with a flag (a usage synopsis wrapped by hand).
//     Flags in plain prose are not read: write op-dbus's flags in code.
//  2. An op-dbus invocation is the word op-dbus (or a path ending in
//     /op-dbus) in command position: first in the span or line, or after a
//     prompt ($, #), sudo, VAR=value assignments or a shell separator
//     (|, ;, &&, ||, $(). `systemctl reload op-dbus` or op-dbus/web1/... are
//     not invocations. The invocation ends at a separator, a redirection
//     (>, >>, 2>, <), a # comment, or a | followed by a word that is not a
//     flag (a pipe into another program; "OLD_SIZE | --from FILE"
//     is an alternative of a usage synopsis and goes on).
//     Its words are read as cobra would: flags (and the value of those
//     that take one) are skipped while the words that follow name
//     subcommands; a word of the form a|b|c or a/b/c under a command with
//     subcommands names alternative subcommands (`index build|update|stats`),
//     and COMMAND (or SUBCOMMAND) names any of them (`op-dbus COMMAND --help`).
//     Brackets, parentheses and a trailing "..." of a synopsis are
//     ignored. A word that names no subcommand of a command that cannot run
//     itself (audit, snapshot, check, index, nixos) is an unknown command;
//     under a runnable command it is an argument, and no later word names a
//     subcommand. Every flag must be one the resolved command accepts (its
//     own or inherited); "-o"/"--opt=value" forms are understood.
//  3. A span or code line that starts with a top-level op-dbus command
//     (`audit verify --fast`, `index build`, `apply --yes`) is read as that
//     command invoked through op-dbus, by rule 2. A span that starts with
//     another word (a program: `busctl --json`, `ovs-vsctl --no-wait`,
//     `go test -run X`) is not read, which is how another tool's flag is
//     written: with its program's name in the same span.
//  4. A span or code line that starts with a flag (`--api-socket PATH`,
//     `-o json`, in prose or in a table row documenting flags) names
//     op-dbus flags: every flag in it must be defined by some command.
//  5. A JSON "args" array (an MCP client configuration) whose file's last
//     "command" before it ends in op-dbus is an invocation of op-dbus with
//     those arguments.
//
// Problems are reported as file:line with what is wrong. There is no
// allowlist. (internal/plugins/*/README.md are not read yet: they still name
// `ovs-vsctl` and `--no-wait` in separate spans, and a --netns flag that
// does not exist on purpose.)
//
// The help text (every command's Use, Short, Long and Example, and every
// flag's usage) is held to the same standard, read as op-dbus's own text:
// Use is an invocation of the parent's command path; every line of Example
// and every indented line of Long that starts with op-dbus is an
// invocation, and so is op-dbus at the start of a `...` or "..." span;
// every -x/--flag word anywhere in Short, Long and flag usages must be
// defined by some command. A flag usage must not put a phrase in
// backquotes: pflag takes a backquoted word as the name of the flag's value
// and prints it as such ("--confirm-within op-dbus commit").

// docsRoot is the whole command tree with cobra's lazily added parts.
func docsRoot() *cobra.Command {
	g := &globals{stdin: strings.NewReader(""), stdout: io.Discard, stderr: io.Discard}
	root := newRoot(g)
	root.InitDefaultHelpCmd()
	root.InitDefaultCompletionCmd()
	root.InitDefaultVersionFlag()
	walkCommands(root, func(c *cobra.Command) { c.InitDefaultHelpFlag() })
	return root
}

func walkCommands(c *cobra.Command, f func(*cobra.Command)) {
	f(c)
	for _, s := range c.Commands() {
		walkCommands(s, f)
	}
}

// flagIndex maps every flag name and shorthand of the tree to the commands
// that define it.
type flagIndex map[string][]string

func newFlagIndex(root *cobra.Command) flagIndex {
	ix := flagIndex{}
	add := func(c *cobra.Command, fs *pflag.FlagSet) {
		fs.VisitAll(func(f *pflag.Flag) {
			ix["--"+f.Name] = append(ix["--"+f.Name], c.CommandPath())
			if f.Shorthand != "" {
				ix["-"+f.Shorthand] = append(ix["-"+f.Shorthand], c.CommandPath())
			}
		})
	}
	walkCommands(root, func(c *cobra.Command) {
		add(c, c.LocalFlags())
		add(c, c.PersistentFlags())
	})
	return ix
}

// lookupFlag finds a flag token ("--name", "-x") among the flags c accepts.
func lookupFlag(c *cobra.Command, tok string) *pflag.Flag {
	for _, fs := range []*pflag.FlagSet{c.Flags(), c.InheritedFlags(), c.PersistentFlags()} {
		var f *pflag.Flag
		if strings.HasPrefix(tok, "--") {
			f = fs.Lookup(tok[2:])
		} else {
			f = fs.ShorthandLookup(tok[1:])
		}
		if f != nil {
			return f
		}
	}
	return nil
}

var (
	longFlagRE  = regexp.MustCompile(`^--[a-z0-9][a-z0-9-]*$`)
	shortFlagRE = regexp.MustCompile(`^-[a-zA-Z]$`)
	envRE       = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*=`)
	wordRE      = regexp.MustCompile(`^[a-z][a-z0-9-]*$`)
	// placeholderRE is a synopsis's placeholder for a subcommand.
	placeholderRE = regexp.MustCompile(`^(COMMAND|SUBCOMMAND|CMD)$`)
	// flagWordRE finds -x and --flag words in running text.
	flagWordRE = regexp.MustCompile(`(^|[\s(\[{,"'=/])(--[a-z0-9][a-z0-9-]*|-[a-zA-Z])\b`)
	argsRE     = regexp.MustCompile(`"args"\s*:\s*\[([^\]]*)\]`)
	commandRE  = regexp.MustCompile(`"command"\s*:\s*"([^"]*)"`)
	jsonStrRE  = regexp.MustCompile(`"((?:[^"\\]|\\.)*)"`)
)

// flagName is the flag of a word ("--out=DIR" → "--out"), or "".
func flagName(w string) (name string, hasValue bool) {
	n, _, eq := strings.Cut(w, "=")
	if longFlagRE.MatchString(n) || shortFlagRE.MatchString(n) {
		return n, eq
	}
	return "", false
}

// trimSynopsis removes a usage synopsis's brackets and a trailing "..." or
// punctuation from a word.
func trimSynopsis(w string) string {
	w = strings.TrimLeft(w, "[({")
	w = strings.TrimSuffix(w, "...")
	w = strings.TrimSuffix(w, "…")
	return strings.TrimRight(w, "])},;:.")
}

// shellWords splits a line of code into words: whitespace separates,
// quotes group (and are removed); `\|` is a `|`.
func shellWords(s string) []string {
	s = strings.ReplaceAll(s, `\|`, "|")
	var words []string
	var b strings.Builder
	in := false
	var quote rune
	for _, r := range s {
		switch {
		case quote != 0:
			if r == quote {
				quote = 0
			} else {
				b.WriteRune(r)
			}
		case r == '"' || r == '\'':
			quote, in = r, true
		case r == ' ' || r == '\t':
			if in {
				words = append(words, b.String())
				b.Reset()
				in = false
			}
		default:
			b.WriteRune(r)
			in = true
		}
	}
	if in {
		words = append(words, b.String())
	}
	return words
}

func isSeparator(w string) bool {
	switch w {
	case "|", ";", "&&", "||", "$(":
		return true
	}
	return false
}

func isOpDbus(w string) bool { return w == "op-dbus" || strings.HasSuffix(w, "/op-dbus") }

// invocations finds the op-dbus invocations of a code unit (rule 2) and
// returns the argument words of each.
func invocations(words []string) [][]string {
	var out [][]string
	cmdPos := true
	for i := 0; i < len(words); i++ {
		w := words[i]
		if isSeparator(w) {
			cmdPos = true
			continue
		}
		if !cmdPos {
			continue
		}
		if w == "$" || w == "#" || w == "sudo" || envRE.MatchString(w) {
			continue
		}
		cmdPos = false
		if !isOpDbus(w) {
			continue
		}
		var args []string
		for i++; i < len(words); i++ {
			a := words[i]
			if a == ";" || a == "&&" || a == "||" || strings.HasPrefix(a, "#") ||
				a == ">" || a == ">>" || a == "2>" || a == "<" || strings.HasPrefix(a, ">") || strings.HasPrefix(a, "2>") {
				break
			}
			if a == "|" {
				if i+1 < len(words) && strings.HasPrefix(trimSynopsis(words[i+1]), "-") {
					continue // an alternative of a synopsis
				}
				break // a pipe into another program
			}
			args = append(args, a)
		}
		i-- // the separator (if any) is looked at by the outer loop
		out = append(out, args)
	}
	return out
}

func findSub(c *cobra.Command, name string) *cobra.Command {
	for _, s := range c.Commands() {
		if s.Name() == name || s.HasAlias(name) {
			return s
		}
	}
	return nil
}

// checkInvocation checks one invocation's command path and flags against
// the tree; it returns what is wrong.
func checkInvocation(root *cobra.Command, ix flagIndex, args []string) []string {
	var problems []string
	cmds := []*cobra.Command{root} // alternatives (a|b) resolve to several
	var flags []string
	positional := false
	for i := 0; i < len(args); i++ {
		a := trimSynopsis(args[i])
		if a == "" || a == "|" {
			continue
		}
		if a == "--" {
			positional = true
			continue
		}
		if n, hasValue := flagName(a); n != "" {
			flags = append(flags, n)
			if !hasValue && takesValue(cmds, ix, root, n) {
				i++
			}
			continue
		}
		if strings.HasPrefix(a, "-") && a != "-" && !strings.HasPrefix(a, "--") && len(a) > 1 && isLetter(a[1]) {
			problems = append(problems, fmt.Sprintf("%q is not a flag op-dbus understands (one-letter flags are -x, long ones --name)", a))
			continue
		}
		c := cmds[0]
		if positional || !c.HasSubCommands() {
			positional = true
			continue
		}
		if placeholderRE.MatchString(a) {
			cmds = c.Commands() // COMMAND: any of them
			continue
		}
		parts := strings.FieldsFunc(a, func(r rune) bool { return r == '|' || r == '/' })
		allWords := len(parts) > 0
		for _, p := range parts {
			allWords = allWords && wordRE.MatchString(p)
		}
		if !allWords {
			if !c.Runnable() {
				problems = append(problems, fmt.Sprintf("%q is not a command of %q (it has: %s)", a, c.CommandPath(), subNames(c)))
			}
			positional = true
			continue
		}
		var next []*cobra.Command
		for _, p := range parts {
			s := findSub(c, p)
			if s == nil {
				if !c.Runnable() {
					problems = append(problems, fmt.Sprintf("%q is not a command: %q has %s", c.CommandPath()+" "+p, c.CommandPath(), subNames(c)))
				}
				continue
			}
			next = append(next, s)
		}
		if len(next) == 0 {
			positional = true
			continue
		}
		cmds = next
	}
	for _, f := range flags {
		ok := false
		for _, c := range cmds {
			ok = ok || lookupFlag(c, f) != nil
		}
		if ok {
			continue
		}
		var paths []string
		for _, c := range cmds {
			paths = append(paths, c.CommandPath())
		}
		if where := ix[f]; len(where) > 0 {
			problems = append(problems, fmt.Sprintf("%s is not a flag of %q (it is one of %s)", f, strings.Join(paths, "|"), strings.Join(where, ", ")))
		} else {
			problems = append(problems, fmt.Sprintf("no op-dbus command has a flag %s (%q has: %s)", f, strings.Join(paths, "|"), flagNames(cmds[0])))
		}
	}
	return problems
}

func isLetter(b byte) bool { return b >= 'a' && b <= 'z' || b >= 'A' && b <= 'Z' }

// takesValue reports whether flag n takes a value, as the commands resolved
// so far (or, failing that, any command) define it.
func takesValue(cmds []*cobra.Command, ix flagIndex, root *cobra.Command, n string) bool {
	var f *pflag.Flag
	for _, c := range cmds {
		if f = lookupFlag(c, n); f != nil {
			break
		}
	}
	if f == nil {
		walkCommands(root, func(c *cobra.Command) {
			if f == nil {
				f = lookupFlag(c, n)
			}
		})
	}
	return f != nil && f.NoOptDefVal == ""
}

func subNames(c *cobra.Command) string {
	var n []string
	for _, s := range c.Commands() {
		n = append(n, s.Name())
	}
	return strings.Join(n, ", ")
}

func flagNames(c *cobra.Command) string {
	seen := map[string]bool{}
	add := func(f *pflag.Flag) { seen["--"+f.Name] = true }
	c.LocalFlags().VisitAll(add)
	c.InheritedFlags().VisitAll(add)
	n := slices.Sorted(maps.Keys(seen))
	return strings.Join(n, " ")
}

// checkFlagWords checks that every flag word is defined by some command.
func checkFlagWords(ix flagIndex, words []string) []string {
	var problems []string
	for _, w := range words {
		if n, _ := flagName(trimSynopsis(w)); n != "" && len(ix[n]) == 0 {
			problems = append(problems, fmt.Sprintf("no op-dbus command has a flag %s", n))
		}
	}
	return problems
}

// codeUnit is a code span or a (joined) code-block line.
type codeUnit struct {
	line  int
	text  string
	block bool
}

// codeUnits extracts the code of a Markdown file (rule 1).
func codeUnits(src string) []codeUnit {
	lines := strings.Split(src, "\n")
	var units []codeUnit
	fence := ""
	prevBlank := true
	inIndented := false
	for i := 0; i < len(lines); i++ {
		l := lines[i]
		t := strings.TrimSpace(l)
		if fence != "" {
			if strings.HasPrefix(t, fence) {
				fence = ""
			} else {
				i = addCodeLine(&units, lines, i)
			}
			prevBlank = false
			continue
		}
		if strings.HasPrefix(t, "```") || strings.HasPrefix(t, "~~~") {
			fence = t[:3]
			inIndented = false
			prevBlank = false
			continue
		}
		if t == "" {
			prevBlank = true
			continue
		}
		indented := strings.HasPrefix(l, "    ") || strings.HasPrefix(l, "\t")
		if indented && (prevBlank || inIndented) {
			inIndented = true
			prevBlank = false
			i = addCodeLine(&units, lines, i)
			continue
		}
		inIndented = false
		prevBlank = false
		// Prose: code spans, joining lines while a span is open.
		start := i
		for strings.Count(l, "`")%2 == 1 && i+1 < len(lines) && strings.TrimSpace(lines[i+1]) != "" {
			i++
			l += " " + strings.TrimSpace(lines[i])
		}
		for _, span := range codeSpans(l) {
			units = append(units, codeUnit{line: start + 1, text: span})
		}
	}
	return units
}

// addCodeLine adds code line i, joined with its continuation lines, and
// returns the index of its last line.
func addCodeLine(units *[]codeUnit, lines []string, i int) int {
	start := i
	l := lines[i]
	for i+1 < len(lines) {
		if strings.HasSuffix(strings.TrimSpace(l), `\`) {
			l = strings.TrimSuffix(strings.TrimSpace(l), `\`) + " " + strings.TrimSpace(lines[i+1])
			i++
			continue
		}
		next := shellWords(lines[i+1])
		if len(next) > 0 && len(invocations(shellWords(l))) > 0 {
			if n, _ := flagName(trimSynopsis(next[0])); n != "" {
				l += " " + strings.TrimSpace(lines[i+1])
				i++
				continue
			}
		}
		break
	}
	*units = append(*units, codeUnit{line: start + 1, text: l, block: true})
	return i
}

// codeSpans returns the inline code spans of a line of prose.
func codeSpans(l string) []string {
	var spans []string
	for {
		a := strings.Index(l, "`")
		if a < 0 {
			return spans
		}
		n := a
		for n < len(l) && l[n] == '`' {
			n++
		}
		ticks := l[a:n]
		b := strings.Index(l[n:], ticks)
		if b < 0 {
			return spans
		}
		spans = append(spans, strings.TrimSpace(l[n:n+b]))
		l = l[n+b+len(ticks):]
	}
}

// checkUnit applies rules 2 to 4 to one unit.
func checkUnit(root *cobra.Command, ix flagIndex, u codeUnit) []string {
	words := shellWords(u.text)
	if invs := invocations(words); len(invs) > 0 {
		var problems []string
		for _, args := range invs {
			problems = append(problems, checkInvocation(root, ix, args)...)
		}
		return problems
	}
	// The first word, past a prompt.
	for len(words) > 0 && (words[0] == "$" || words[0] == "#") {
		words = words[1:]
	}
	if len(words) == 0 {
		return nil
	}
	first := trimSynopsis(words[0])
	if n, _ := flagName(first); n != "" {
		return checkFlagWords(ix, words) // rule 4
	}
	if s := findSub(root, first); s != nil && first == strings.TrimSpace(words[0]) {
		return checkInvocation(root, ix, words) // rule 3
	}
	return nil
}

// docFiles are the Markdown files the rule covers, relative to the module root.
func docFiles(t *testing.T) []string {
	t.Helper()
	files := []string{"README.md"}
	more, err := filepath.Glob("../../docs/*.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range more {
		files = append(files, filepath.ToSlash(strings.TrimPrefix(f, "../../")))
	}
	return files
}

func TestDocsFlagsAndCommands(t *testing.T) {
	root := docsRoot()
	ix := newFlagIndex(root)
	files := docFiles(t)
	if len(files) < 3 {
		t.Fatalf("found only %v", files)
	}
	for _, name := range files {
		b, err := os.ReadFile(filepath.Join("../..", name))
		if err != nil {
			t.Fatal(err)
		}
		lastCommand := ""
		for _, u := range codeUnits(string(b)) {
			for _, p := range checkUnit(root, ix, u) {
				t.Errorf("%s:%d: %s\n\t%s", name, u.line, p, u.text)
			}
			// Rule 5: MCP client configurations.
			if m := commandRE.FindAllStringSubmatch(u.text, -1); m != nil {
				lastCommand = m[len(m)-1][1]
			}
			if !isOpDbus(lastCommand) {
				continue
			}
			for _, m := range argsRE.FindAllStringSubmatch(u.text, -1) {
				var args []string
				for _, s := range jsonStrRE.FindAllStringSubmatch(m[1], -1) {
					args = append(args, s[1])
				}
				for _, p := range checkInvocation(root, ix, args) {
					t.Errorf("%s:%d: %s\n\t%s", name, u.line, p, u.text)
				}
			}
		}
	}
}

// spanRE finds `...` and "..." spans of help text.
var spanRE = regexp.MustCompile("`([^`]*)`|\"([^\"]*)\"")

func TestHelpFlagsAndCommands(t *testing.T) {
	root := docsRoot()
	ix := newFlagIndex(root)
	walkCommands(root, func(c *cobra.Command) {
		if c.Name() == "completion" || (c.HasParent() && c.Parent().Name() == "completion") || c.Name() == "help" {
			return // cobra's
		}
		where := c.CommandPath()
		report := func(part string, problems []string) {
			for _, p := range problems {
				t.Errorf("%s %s: %s", where, part, p)
			}
		}
		// Use: the parent's path and the synopsis.
		if c.HasParent() {
			parent := strings.Fields(c.Parent().CommandPath())
			report("Use", checkInvocation(root, ix, append(parent[1:], shellWords(c.Use)...)))
		}
		for _, l := range strings.Split(c.Example, "\n") {
			for _, args := range invocations(shellWords(l)) {
				report("Example", checkInvocation(root, ix, args))
			}
		}
		for _, l := range strings.Split(c.Long, "\n") {
			if strings.HasPrefix(l, " ") {
				for _, args := range invocations(shellWords(l)) {
					report("Long", checkInvocation(root, ix, args))
				}
			}
		}
		for _, text := range []string{c.Short, c.Long} {
			for _, m := range spanRE.FindAllStringSubmatch(text, -1) {
				span := m[1] + m[2]
				if w := shellWords(span); len(w) > 0 && isOpDbus(w[0]) {
					for _, args := range invocations(w) {
						report("Short/Long", checkInvocation(root, ix, args))
					}
				}
			}
			for _, m := range flagWordRE.FindAllStringSubmatch(text, -1) {
				report("Short/Long", checkFlagWords(ix, []string{m[2]}))
			}
		}
		c.LocalFlags().VisitAll(func(f *pflag.Flag) {
			for _, m := range flagWordRE.FindAllStringSubmatch(f.Usage, -1) {
				report("--"+f.Name+" usage", checkFlagWords(ix, []string{m[2]}))
			}
			if name, _ := pflag.UnquoteUsage(f); strings.ContainsAny(name, " ") {
				report("--"+f.Name+" usage", []string{fmt.Sprintf("backquotes name the flag's value (pflag): --%s %s", f.Name, name)})
			}
		})
	})
}

// TestDocsRuleExamples pins the rule on examples: what counts and what
// does not.
func TestDocsRuleExamples(t *testing.T) {
	root := docsRoot()
	ix := newFlagIndex(root)
	bad := []string{
		"`op-dbus serve --listen :8080`",
		"`--listen host:port` requires a token",
		"`op-dbus snapshot frobnicate`",
		"`op-dbus audit log/show/frob`",
		"`op-dbus mcp --api-socket X`", // serve's flag, not mcp's
		"`op-dbus audit consistency OLD_SIZE | --from-checkpoint FILE`",
		"`-H \"Authorization: Bearer x\"`", // curl's: say `curl -H ...`
		"`audit verify --nope`",
		"    $ op-dbus query -p systemd --nope > x.json",
		"    op-dbus serve --state F \\\n        --nope",
		"    op-dbus introspect [--bus B]\n                       [--nope]",
		"`OPDBUS_X=1 op-dbus index build --nope`",
	}
	good := []string{
		"like `systemctl --user`",
		"`busctl --json`, `ovs-vsctl --no-wait`, `go test -run X -bench Y`, `nix-instantiate --eval`",
		"`systemctl reload op-dbus`, `op-dbus/web1/audit/x`",
		"`op-dbus --user --state-dir ~/.local/state/op-dbus recover --if-deadline-passed -o json`",
		"`op-dbus index build\\|update\\|stats`",
		"`op-dbus audit consistency OLD_SIZE | --from FILE`",
		"`op-dbus query -o json | jq -r .plugins`",
		"`op-dbus search \"set the time zone\" [-k N] [--kind K]`",
		"    op-dbus audit proof 3 > receipt.json   # --nope in a comment",
		"`--api-socket /run/op-dbus/api.sock`, `-o yaml`",
		"`op-dbus nixos generate --unit-root /x`", // hidden flags count
		"`op-dbus --help`, `op-dbus serve --help`, `op-dbus --version`, `op-dbus COMMAND --help`",
	}
	for _, s := range bad {
		var problems []string
		for _, u := range codeUnits(s) {
			problems = append(problems, checkUnit(root, ix, u)...)
		}
		if len(problems) == 0 {
			t.Errorf("no problem found in %q", s)
		}
	}
	for _, s := range good {
		for _, u := range codeUnits(s) {
			if p := checkUnit(root, ix, u); len(p) > 0 {
				t.Errorf("%q: %v", s, p)
			}
		}
	}
}

// helpWord reports whether text names w as a word (not inside a longer
// name: "search" is not found in "search_index").
func helpWord(text, w string) bool {
	return regexp.MustCompile(`(^|[^A-Za-z0-9_-])` + regexp.QuoteMeta(w) + `($|[^A-Za-z0-9_-])`).MatchString(text)
}

func findCmd(t *testing.T, root *cobra.Command, path ...string) *cobra.Command {
	t.Helper()
	c, rest, err := root.Find(path)
	if err != nil || len(rest) > 0 {
		t.Fatalf("op-dbus %v: %v %v", path, rest, err)
	}
	return c
}

// TestHelpMcpNamesEveryTool: `op-dbus mcp --help` names every tool the
// server registers (with --allow-apply, so apply too), and docs/mcp.md has
// a row for each.
func TestHelpMcpNamesEveryTool(t *testing.T) {
	ctx := context.Background()
	svc := control.New(control.Options{StateDir: t.TempDir(), Engine: engine.New(nil)})
	defer svc.Close()
	srv := mcpserver.New(svc, mcpserver.Options{AllowApply: true})
	ct, st := mcp.NewInMemoryTransports()
	ss, err := srv.MCP().Connect(ctx, st, nil)
	if err != nil {
		t.Fatal(err)
	}
	cs, err := mcp.NewClient(&mcp.Implementation{Name: "docs-test", Version: "0"}, nil).Connect(ctx, ct, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { cs.Close(); ss.Wait() }()
	r, err := cs.ListTools(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Tools) < 5 {
		t.Fatalf("only %d tools", len(r.Tools))
	}
	long := findCmd(t, docsRoot(), "mcp").Long
	doc, err := os.ReadFile("../../docs/mcp.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, tool := range r.Tools {
		if !helpWord(long, tool.Name) {
			t.Errorf("op-dbus mcp --help does not name the tool %s", tool.Name)
		}
		if !strings.Contains(string(doc), "| `"+tool.Name+"` |") {
			t.Errorf("docs/mcp.md has no row for the tool %s", tool.Name)
		}
	}
}

// daemonWatched are the plugins internal/daemon/watch.go watches itself
// (watcherFor: systemd's signals, PropertiesChanged of the property
// services); every other plugin is watched when it is a plugin.Watcher.
var daemonWatched = []string{"systemd", "hostname", "timedate", "locale"}

// TestHelpNamesEveryPlugin: every directory under internal/plugins/ registers a
// plugin (imported by this test as by cmd/op-dbus); `op-dbus serve --help`
// names each plugin and says which have no change source; README.md's
// plugin table has a row for each.
func TestHelpNamesEveryPlugin(t *testing.T) {
	dirs, err := os.ReadDir("../plugins")
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for _, d := range dirs {
		if d.IsDir() {
			want = append(want, d.Name())
		}
	}
	if got := plugin.Names(); !slices.Equal(got, want) {
		t.Fatalf("registered plugins %v, internal/plugins/ has %v: import the new one in this test (and cmd/op-dbus)", got, want)
	}
	serve := findCmd(t, docsRoot(), "serve").Long
	_, noSource, ok := strings.Cut(serve, "\n\nThe ")
	if ok {
		noSource, _, _ = strings.Cut(noSource, "have no change source")
	}
	if !ok || noSource == "" {
		t.Fatal(`serve --help has no paragraph "The ... plugins have no change source"`)
	}
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range plugin.New(plugin.Options{StateDir: t.TempDir()}) {
		name := p.Name()
		_, watches := p.(plugin.Watcher)
		watches = watches || slices.Contains(daemonWatched, name)
		switch {
		case !helpWord(serve, name):
			t.Errorf("op-dbus serve --help does not name the plugin %s", name)
		case watches && helpWord(noSource, name):
			t.Errorf("op-dbus serve --help says %s has no change source, but it is watched", name)
		case !watches && !helpWord(noSource, name):
			t.Errorf("op-dbus serve --help does not say that %s has no change source", name)
		}
		if !strings.Contains(string(readme), "\n| "+name+" |") {
			t.Errorf("README.md's plugin table has no row for %s", name)
		}
		if c, ok := p.(plugin.Closer); ok {
			_ = c.Close()
		}
	}
}
