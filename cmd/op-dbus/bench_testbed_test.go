package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/op-dbus/op-dbus/internal/plugin"
	"github.com/op-dbus/op-dbus/internal/plugins/systemd"
)

// Benchmarks compare op-dbus with what a user would otherwise run, in the
// same run on the same test bed. Ratios go to docs/benchmarks.md.

const benchUnits = 50

func benchBed(b *testing.B) (env []string, sysctl func(args ...string)) {
	b.Helper()
	m, env := userBedTB(b)
	for i := range benchUnits {
		name := fmt.Sprintf("bench-%02d.service", i)
		if err := os.WriteFile(filepath.Join(m.DataUnitDir, name), []byte(strings.ReplaceAll(goodUnit, "%s", name)), 0o644); err != nil {
			b.Fatal(err)
		}
	}
	if out, err := m.Systemctl(context.Background(), "daemon-reload"); err != nil {
		b.Fatalf("%v %s", err, out)
	}
	sysctl = func(args ...string) {
		cmd := exec.Command("systemctl", append([]string{"--user"}, args...)...)
		cmd.Env = m.Env
		if out, err := cmd.CombinedOutput(); err != nil {
			b.Fatalf("systemctl %v: %v %s", args, err, out)
		}
	}
	return env, sysctl
}

func unitNames() []string {
	out := make([]string, benchUnits)
	for i := range out {
		out[i] = fmt.Sprintf("bench-%02d.service", i)
	}
	return out
}

func docFor(state string) string {
	var parts []string
	for _, u := range unitNames() {
		parts = append(parts, fmt.Sprintf("%q: {\"active_state\": %q}", u, state))
	}
	return `{"version":1,"plugins":{"systemd":{"units":{` + strings.Join(parts, ",") + `}}}}`
}

func execOp(b *testing.B, env []string, args ...string) {
	cmd := exec.Command(binary, args...)
	cmd.Env = append(os.Environ(), env...)
	if out, err := cmd.CombinedOutput(); err != nil {
		b.Fatalf("op-dbus %v: %v\n%s", args, err, out)
	}
}

// BenchmarkQuerySystemd: a full query of the systemd plugin vs the two
// listings systemctl needs for the same picture.
func BenchmarkQuerySystemd(b *testing.B) {
	env, sysctl := benchBed(b)
	b.Run("op-dbus-cli", func(b *testing.B) {
		for range b.N {
			execOp(b, env, "--user", "query", "-p", "systemd")
		}
	})
	b.Run("op-dbus-in-process", func(b *testing.B) {
		for _, kv := range env {
			k, v, _ := strings.Cut(kv, "=")
			b.Setenv(k, v)
		}
		p := systemd.New(plugin.Options{User: true})
		defer p.Close()
		ctx := context.Background()
		if _, err := p.Query(ctx); err != nil {
			b.Fatal(err)
		}
		b.ResetTimer()
		for range b.N {
			if _, err := p.Query(ctx); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("systemctl-list-units+list-unit-files", func(b *testing.B) {
		for range b.N {
			sysctl("list-units", "--all", "--no-pager")
			sysctl("list-unit-files", "--no-pager")
		}
	})
}

// BenchmarkApply50Units: start 50 stopped units (each iteration stops them
// again untimed) with one op-dbus apply vs a loop of systemctl start.
func BenchmarkApply50Units(b *testing.B) {
	env, sysctl := benchBed(b)
	dir := b.TempDir()
	active := dir + "/active.json"
	if err := os.WriteFile(active, []byte(docFor("active")), 0o644); err != nil {
		b.Fatal(err)
	}
	stopAll := func() {
		b.StopTimer()
		sysctl(append([]string{"stop"}, unitNames()...)...)
		b.StartTimer()
	}
	b.Run("op-dbus-apply", func(b *testing.B) {
		for range b.N {
			stopAll()
			execOp(b, env, "--user", "--state-dir="+dir, "apply", "--yes", active)
		}
	})
	b.Run("systemctl-start-loop", func(b *testing.B) {
		for range b.N {
			stopAll()
			for _, u := range unitNames() {
				sysctl("start", u)
			}
		}
	})
	// Not what a user would loop over, but systemd's own floor for the work:
	// one systemctl call that starts all 50 in one transaction.
	b.Run("systemctl-start-all-in-one-call", func(b *testing.B) {
		for range b.N {
			stopAll()
			sysctl(append([]string{"start"}, unitNames()...)...)
		}
	})
	b.Run("op-dbus-noop-reapply", func(b *testing.B) {
		execOp(b, env, "--user", "--state-dir="+dir, "apply", "--yes", active)
		b.ResetTimer()
		for range b.N {
			execOp(b, env, "--user", "--state-dir="+dir, "apply", "--yes", active)
		}
	})
}
