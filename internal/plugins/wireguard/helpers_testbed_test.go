package wireguard

import (
	"context"
	"flag"
	"maps"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/op-dbus/op-dbus/internal/testbed"
)

// Userspace WireGuard devices are found through /var/run/wireguard of the
// caller's mount namespace, and a Go process cannot enter another mount
// namespace (setns needs a single thread). So a test that drives the
// plugin in-process runs twice: the outer run starts the bed and its
// devices (testbed.NewWireGuard) and re-executes this test binary inside
// the bed, limited to the one test; the inner run (inBedEnv set to the
// test's name) does the work, using wg(8) directly as its oracle.
const (
	inBedEnv    = "OPDBUS_WG_TEST_IN_BED"
	inBedDirEnv = "OPDBUS_WG_TEST_DIR"
)

func insideBed() bool { return os.Getenv(inBedEnv) != "" }

// inBed runs fn inside a bed that has userspace WireGuard devices names.
// dir is a temp dir of the outer test, visible inside (key files go there).
func inBed(t *testing.T, names []string, fn func(t *testing.T, dir string)) {
	t.Helper()
	if name := os.Getenv(inBedEnv); name != "" {
		if name != t.Name() {
			t.Skip("another test runs in this bed")
		}
		fn(t, os.Getenv(inBedDirEnv))
		return
	}
	w := testbed.NewWireGuard(t, names...)
	dir := t.TempDir()
	out, err := reexec(w, dir, t.Name(), "-test.run=^"+regexp.QuoteMeta(t.Name())+"$", "-test.v")
	t.Logf("inside the bed:\n%s", out)
	if err != nil {
		t.Fatalf("the test inside the bed failed: %v", err)
	}
	if !strings.Contains(out, "--- PASS: "+t.Name()) {
		t.Fatalf("the test inside the bed did not pass (skipped or not run)")
	}
}

func reexec(w *testbed.WireGuard, dir, name string, args ...string) (string, error) {
	exe, err := os.Executable()
	if err != nil {
		return "", err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	env := append(os.Environ(), inBedEnv+"="+name, inBedDirEnv+"="+dir)
	cmd := w.Command(ctx, env, append([]string{exe, "-test.count=1", "-test.timeout=9m"}, args...)...)
	b, err := cmd.CombinedOutput()
	return string(b), err
}

// benchInBed is inBed for a benchmark: the inner run's output, with the
// benchmark lines, goes to stdout.
func benchInBed(b *testing.B, names []string, fn func(b *testing.B, dir string)) {
	if name := os.Getenv(inBedEnv); name != "" {
		if name != b.Name() {
			b.Skip("another benchmark runs in this bed")
		}
		fn(b, os.Getenv(inBedDirEnv))
		return
	}
	w := testbed.NewWireGuard(b, names...)
	dir := b.TempDir()
	args := []string{"-test.run=^$", "-test.bench=^" + regexp.QuoteMeta(b.Name()) + "$", "-test.benchmem"}
	if f := flag.Lookup("test.benchtime"); f != nil {
		args = append(args, "-test.benchtime="+f.Value.String())
	}
	out, err := reexec(w, dir, b.Name(), args...)
	os.Stdout.WriteString(out)
	if err != nil {
		b.Fatalf("the benchmark inside the bed failed: %v", err)
	}
	// The outer run measures nothing itself; skipping keeps the framework
	// from running it again with a larger b.N.
	b.SkipNow()
}

// wg runs wg(8) (inside the bed) and fails the test on error.
func wg(t testing.TB, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "wg", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("wg %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// dump is `wg show NAME dump` parsed: the interface line and the peers by
// public key.
type dump struct {
	PrivateKey, PublicKey, ListenPort, FwMark string
	Peers                                     map[string]dumpPeer
	raw                                       string
}

type dumpPeer struct {
	PresharedKey, Endpoint, AllowedIPs, Keepalive string
}

func wgDump(t testing.TB, name string) dump {
	t.Helper()
	out := wg(t, "show", name, "dump")
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	f := strings.Split(lines[0], "\t")
	if len(f) != 4 {
		t.Fatalf("wg show %s dump: interface line %q", name, lines[0])
	}
	d := dump{PrivateKey: f[0], PublicKey: f[1], ListenPort: f[2], FwMark: f[3], Peers: map[string]dumpPeer{}, raw: out}
	for _, l := range lines[1:] {
		f := strings.Split(l, "\t")
		if len(f) != 8 {
			t.Fatalf("wg show %s dump: peer line %q", name, l)
		}
		d.Peers[f[0]] = dumpPeer{PresharedKey: f[1], Endpoint: f[2], AllowedIPs: f[3], Keepalive: f[7]}
	}
	return d
}

// config is the part of a dump that configuration sets (no counters).
func (d dump) config() string {
	var b strings.Builder
	b.WriteString(d.PublicKey + " " + d.ListenPort + " " + d.FwMark + "\n")
	for _, k := range slices.Sorted(maps.Keys(d.Peers)) {
		p := d.Peers[k]
		b.WriteString(k + " psk=" + strconv.FormatBool(p.PresharedKey != "(none)") + " " + p.Endpoint + " " + p.AllowedIPs + " " + p.Keepalive + "\n")
	}
	return b.String()
}
