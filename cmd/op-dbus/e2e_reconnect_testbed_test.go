package main

import (
	"context"
	"path/filepath"
	"testing"
	"time"
)

// The system bus restarts under `op-dbus serve`: the watcher reconnects by
// itself, and a change made after the restart is still seen as drift.
func TestTestbedServeReconnectsAfterBusRestart(t *testing.T) {
	b, env := identityBed(t)
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if out, err := b.Busctl(ctx, "call", "org.freedesktop.hostname1", "/org/freedesktop/hostname1",
		"org.freedesktop.hostname1", "SetLocation", "sb", "home", "false"); err != nil {
		t.Fatalf("%v %s", err, out)
	}
	doc := writeFile(t, dir, "host.json", `{"version":1,"plugins":{"hostname":{"location":"home"}}}`)
	s := startServe(t, env, "--state-dir="+filepath.Join(dir, "state"), "serve", "--state", doc)

	if err := b.RestartBus(ctx); err != nil {
		t.Fatal(err)
	}
	if !s.stderrHas("watch hostname: lost the system bus; reconnecting") {
		t.Fatalf("daemon did not notice the bus restart:\n%s", s.Stderr())
	}
	if !s.stderrHas("watch hostname: connected to the system bus again") {
		t.Fatalf("daemon did not reconnect:\n%s", s.Stderr())
	}
	if out, err := b.Busctl(ctx, "call", "org.freedesktop.hostname1", "/org/freedesktop/hostname1",
		"org.freedesktop.hostname1", "SetLocation", "sb", "moved after restart", "false"); err != nil {
		t.Fatalf("%v %s", err, out)
	}
	ev := s.wait(t, "drift", func(e daemonEvent) bool { return e.Plugin == "hostname" })
	if len(ev.Changes) != 1 || ev.Changes[0] != `location desired "home", current "moved after restart"` {
		t.Errorf("drift after the bus restart: %s", ev.raw)
	}
}
