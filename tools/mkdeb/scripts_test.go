package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// The maintainer scripts run for real in a private mount namespace: a tmpfs
// over /var/lib and /run hides the host's, and a systemctl stub on PATH
// records the calls. With and without /run/systemd/system.
func TestMaintainerScripts(t *testing.T) {
	if os.Geteuid() != 0 {
		unavailable(t, "needs root for a mount namespace")
	}
	if _, err := exec.LookPath("unshare"); err != nil {
		unavailable(t, "unshare not installed")
	}
	repo, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	scripts := filepath.Join(repo, "dist/deb")
	stub := t.TempDir()
	if err := os.WriteFile(filepath.Join(stub, "systemctl"),
		[]byte("#!/bin/sh\necho \"$*\" >> \"$SYSTEMCTL_LOG\"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	// Each step: "script args | expected systemctl calls, ; separated".
	cases := []struct {
		name    string
		systemd bool
		steps   string // shell run inside the namespace
		calls   string
		after   string // shell that must succeed afterwards
	}{
		{"install without systemd", false,
			`sh $S/postinst configure ""`,
			"enable op-dbus.service",
			`[ "$(stat -c %a:%U /var/lib/op-dbus)" = 700:root ]`},
		{"install with systemd", true,
			`sh $S/postinst configure ""`,
			"daemon-reload;enable op-dbus.service;start op-dbus.service",
			`[ -d /var/lib/op-dbus ]`},
		{"upgrade keeps the admin's choice", true,
			`sh $S/postinst configure 0.0.0~git1.abc && sh $S/prerm upgrade 0.0.0~git2.def`,
			"daemon-reload;try-restart op-dbus.service",
			`[ -d /var/lib/op-dbus ]`},
		{"remove stops, keeps state", true,
			`sh $S/postinst configure "" && : > $SYSTEMCTL_LOG && touch /var/lib/op-dbus/audit && sh $S/prerm remove && sh $S/postrm remove`,
			"stop op-dbus.service;disable op-dbus.service;daemon-reload",
			`[ -f /var/lib/op-dbus/audit ]`},
		{"purge removes state", false,
			`sh $S/postinst configure "" && : > $SYSTEMCTL_LOG && touch /var/lib/op-dbus/audit && sh $S/prerm remove && sh $S/postrm remove && sh $S/postrm purge`,
			"disable op-dbus.service",
			`[ ! -e /var/lib/op-dbus ]`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			log := filepath.Join(t.TempDir(), "systemctl.log")
			if err := os.WriteFile(log, nil, 0o644); err != nil {
				t.Fatal(err)
			}
			sd := ""
			if c.systemd {
				sd = "mkdir -p /run/systemd/system && "
			}
			script := "set -e; mount -t tmpfs tmpfs /var/lib && mount -t tmpfs tmpfs /run && " + sd +
				c.steps + " && " + c.after
			cmd := exec.Command("unshare", "-m", "--propagation", "private", "sh", "-c", script)
			cmd.Env = append(os.Environ(), "S="+scripts, "SYSTEMCTL_LOG="+log, "PATH="+stub+":"+os.Getenv("PATH"))
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("%v\n%s", err, out)
			}
			b, _ := os.ReadFile(log)
			got := strings.Join(strings.Fields(strings.ReplaceAll(strings.TrimSpace(string(b)), " ", "_")), ";")
			if want := strings.ReplaceAll(c.calls, " ", "_"); got != want {
				t.Errorf("systemctl calls %q, want %q", strings.ReplaceAll(got, "_", " "), c.calls)
			}
		})
	}
}
