package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// binary is op-dbus built once for the end-to-end tests: they run the real
// program, as a user would, against the test bed's real daemons.
var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "op-dbus-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "op-dbus")
	flag.Parse()
	args := []string{"build", "-race", "-o", binary, "."}
	if f := flag.Lookup("test.bench"); f != nil && f.Value.String() != "" {
		// Benchmarks measure the binary a user runs, not a race build.
		args = []string{"build", "-o", binary, "."}
	}
	out, err := exec.Command("go", args...).CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "build op-dbus: %v\n%s", err, out)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// result of one op-dbus run.
type result struct {
	code           int
	stdout, stderr string
}

func (r result) String() string {
	return fmt.Sprintf("exit %d\n--- stdout\n%s--- stderr\n%s", r.code, r.stdout, r.stderr)
}

// run executes op-dbus with env (added to the test's environment) and args.
func run(t *testing.T, env []string, stdin string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdin = strings.NewReader(stdin)
	return runCmd(t, cmd)
}

// runCmd runs an op-dbus command (on the host, or inside a bed through
// the bed's Command) and returns its output and exit code; it fails the
// test only when the command could not run at all.
func runCmd(t *testing.T, cmd *exec.Cmd) result {
	t.Helper()
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	r := result{stdout: out.String(), stderr: errb.String()}
	if ee, ok := err.(*exec.ExitError); ok {
		r.code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("run %v: %v", cmd.Args, err)
	}
	return r
}

func writeFile(t *testing.T, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func wantCode(t *testing.T, r result, code int, what string) {
	t.Helper()
	if r.code != code {
		t.Fatalf("%s: want exit %d\n%s", what, code, r)
	}
}

// planOps runs `diff -o json` and returns the op IDs.
func planOps(t *testing.T, env []string, args ...string) []string {
	t.Helper()
	r := run(t, env, "", append(args, "-o", "json")...)
	if r.code != 0 && r.code != 2 {
		t.Fatalf("diff: %s", r)
	}
	var p struct {
		InSync bool `json:"in_sync"`
		Ops    []struct {
			ID string `json:"id"`
		} `json:"ops"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &p); err != nil {
		t.Fatalf("diff -o json output: %v\n%s", err, r)
	}
	ids := []string{}
	for _, o := range p.Ops {
		ids = append(ids, o.ID)
	}
	if (r.code == 0) != (len(ids) == 0) || p.InSync != (len(ids) == 0) {
		t.Fatalf("exit code %d disagrees with %d ops", r.code, len(ids))
	}
	return ids
}
