package testbed

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// hostState is what the beds must never change on the host.
type hostState struct {
	hostname string
	files    map[string]string
}

func captureHost(t *testing.T) hostState {
	t.Helper()
	h, err := os.Hostname()
	if err != nil {
		t.Fatal(err)
	}
	s := hostState{hostname: h, files: map[string]string{}}
	for _, f := range []string{"/etc/hostname", "/etc/machine-info", "/etc/default/locale", "/etc/default/keyboard",
		"/etc/vconsole.conf", "/etc/adjtime", "/etc/timezone", "/etc/locale.gen", "/usr/lib/locale/locale-archive"} {
		b, err := os.ReadFile(f)
		if err != nil {
			s.files[f] = "<" + err.Error() + ">"
			continue
		}
		s.files[f] = string(b)
	}
	l, err := os.Readlink("/etc/localtime")
	if err != nil {
		l = "<" + err.Error() + ">"
	}
	s.files["readlink /etc/localtime"] = l
	ents, _ := os.ReadDir("/usr/lib/locale")
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	s.files["ls /usr/lib/locale"] = strings.Join(names, " ")
	return s
}

func (s hostState) assertSame(t *testing.T) {
	t.Helper()
	now := captureHost(t)
	if now.hostname != s.hostname {
		t.Errorf("host hostname changed: %q -> %q", s.hostname, now.hostname)
	}
	for k, v := range s.files {
		if now.files[k] != v {
			t.Errorf("host %s changed: %q -> %q", k, v, now.files[k])
		}
	}
}

// prop gets a property through the bed's bus and returns busctl's value
// text, e.g. `s "foo"`.
func prop(t *testing.T, i *Identity, name, prop string) string {
	t.Helper()
	path := "/" + strings.ReplaceAll(name, ".", "/")
	out, err := i.Busctl(ctxT(t), "get-property", name, path, name, prop)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(out)
}

func call(t *testing.T, i *Identity, name, method, sig string, args ...string) {
	t.Helper()
	if _, err := callErr(t, i, name, method, sig, args...); err != nil {
		t.Fatal(err)
	}
}

func callErr(t *testing.T, i *Identity, name, method, sig string, args ...string) (string, error) {
	t.Helper()
	path := "/" + strings.ReplaceAll(name, ".", "/")
	return i.Busctl(ctxT(t), append([]string{"call", name, path, name, method, sig}, args...)...)
}

func exec1(t *testing.T, i *Identity, argv ...string) string {
	t.Helper()
	out, err := i.Exec(ctxT(t), argv...)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(out)
}

// nsPIDs lists the host PIDs of every process in the PID namespace of pid.
func nsPIDs(t *testing.T, pid int) []int {
	t.Helper()
	target, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/pid", pid))
	if err != nil {
		t.Fatal(err)
	}
	ents, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	var pids []int
	for _, e := range ents {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if l, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/pid", p)); err == nil && l == target {
			pids = append(pids, p)
		}
	}
	return pids
}

func assertGone(t *testing.T, pids []int, cgroups []string) {
	t.Helper()
	for _, p := range pids {
		if err := syscall.Kill(p, 0); !errors.Is(err, syscall.ESRCH) {
			comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", p))
			t.Errorf("process %d (%s) still exists after Close", p, strings.TrimSpace(string(comm)))
		}
	}
	for _, c := range cgroups {
		if _, err := os.Stat(c); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("cgroup %s still exists after Close", c)
		}
	}
}

func TestUserManager(t *testing.T) {
	t.Parallel()
	host := captureHost(t)
	start := time.Now()
	m := NewUserManager(t)
	t.Logf("user manager ready in %v", time.Since(start))
	ctx := ctxT(t)

	if !strings.HasPrefix(envValue(m.Env, "HOME"), m.Dir+"/") {
		t.Errorf("HOME %q not below Dir %q", envValue(m.Env, "HOME"), m.Dir)
	}
	for k, want := range map[string]string{"XDG_RUNTIME_DIR": m.RuntimeDir, "XDG_CONFIG_HOME": m.ConfigHome, "DBUS_SESSION_BUS_ADDRESS": m.BusAddress} {
		if got := envValue(m.Env, k); got != want {
			t.Errorf("Env %s=%q, want %q", k, got, want)
		}
	}
	if st, err := os.Stat(m.RuntimeDir); err != nil || st.Mode().Perm() != 0o700 {
		t.Errorf("RuntimeDir: %v %v", st.Mode(), err)
	}

	// The session bus answers for the manager.
	out, err := m.Busctl(ctx, "get-property", "org.freedesktop.systemd1", "/org/freedesktop/systemd1", "org.freedesktop.systemd1.Manager", "Version")
	if err != nil || !strings.HasPrefix(out, "s ") {
		t.Fatalf("Version over the session bus: %q %v", out, err)
	}
	// systemctl inside the bed uses the private socket and sees a booted system.
	if out, err := m.Systemctl(ctx, "is-system-running"); err != nil || strings.TrimSpace(out) != "running" {
		t.Errorf("is-system-running: %q %v", out, err)
	}

	// A new unit file starts without daemon-reload.
	unit := "tb-sleep.service"
	if err := m.WriteUnit(unit, "[Service]\nExecStart=/bin/sleep infinity\n"); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Systemctl(ctx, "start", unit); err != nil {
		t.Fatal(err)
	}
	if out, err := m.Systemctl(ctx, "is-active", unit); strings.TrimSpace(out) != "active" {
		t.Fatalf("is-active: %q %v", out, err)
	}
	// The same from the host, with m.Env: systemctl falls back to the bus.
	if out, err := runOutput(ctx, m.Env, "systemctl", "--user", "is-active", unit); strings.TrimSpace(out) != "active" {
		t.Errorf("host systemctl --user is-active: %q %v", out, err)
	}
	// The unit's processes live in the bed's own cgroup.
	if out, err := m.Systemctl(ctx, "show", "-p", "ControlGroup", "--value", unit); err != nil || !strings.HasPrefix(strings.TrimSpace(out), "/op-testbed-") {
		t.Errorf("ControlGroup: %q %v", out, err)
	}

	// A changed unit file needs daemon-reload.
	if err := m.WriteUnit(unit, "[Service]\nExecStart=/bin/sleep 1000\n"); err != nil {
		t.Fatal(err)
	}
	if out, _ := m.Systemctl(ctx, "show", "-p", "NeedDaemonReload", "--value", unit); strings.TrimSpace(out) != "yes" {
		t.Errorf("NeedDaemonReload after edit = %q, want yes", out)
	}
	if _, err := m.Systemctl(ctx, "daemon-reload"); err != nil {
		t.Fatal(err)
	}
	if out, _ := m.Systemctl(ctx, "show", "-p", "NeedDaemonReload", "--value", unit); strings.TrimSpace(out) != "no" {
		t.Errorf("NeedDaemonReload after daemon-reload = %q, want no", out)
	}
	if _, err := m.Systemctl(ctx, "stop", unit); err != nil {
		t.Fatal(err)
	}
	if out, _ := m.Systemctl(ctx, "is-active", unit); strings.TrimSpace(out) != "inactive" {
		t.Errorf("is-active after stop: %q", out)
	}
	// Units in DataUnitDir can be masked (the mask link goes to UnitDir).
	if err := os.WriteFile(filepath.Join(m.DataUnitDir, "tb-mask.service"), []byte("[Service]\nExecStart=/bin/sleep infinity\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Systemctl(ctx, "mask", "tb-mask.service"); err != nil {
		t.Fatal(err)
	}
	if out, _ := m.Systemctl(ctx, "is-enabled", "tb-mask.service"); strings.TrimSpace(out) != "masked" {
		t.Errorf("is-enabled after mask: %q", out)
	}
	// The UTS namespace is the bed's own.
	if _, err := m.Exec(ctx, "hostname", "tb-user-bed"); err != nil {
		t.Fatal(err)
	}
	host.assertSame(t)
}

func TestUserManagerCloseKillsEverything(t *testing.T) {
	t.Parallel()
	dir := bedTempDir(t, "tb-user-")
	m, err := StartUserManager(ctxT(t), dir)
	if err != nil {
		unavailable(t, "systemd --user", err)
	}
	closed := false
	t.Cleanup(func() {
		if !closed {
			m.Close()
		}
	})
	if err := m.WriteUnit("tb-sleep.service", "[Service]\nExecStart=/bin/sleep infinity\n"); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Systemctl(ctxT(t), "start", "tb-sleep.service"); err != nil {
		t.Fatal(err)
	}
	pids := nsPIDs(t, m.proc.pid())
	if len(pids) < 4 { // sh, systemd, dbus-daemon, sleep
		t.Fatalf("bed has only %d processes", len(pids))
	}
	cgroups := m.proc.cgroups
	for _, c := range cgroups {
		if _, err := os.Stat(c); err != nil {
			t.Fatalf("bed cgroup: %v", err)
		}
	}
	start := time.Now()
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	closed = true
	t.Logf("Close took %v for %d processes", time.Since(start), len(pids))
	if err := m.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	assertGone(t, pids, cgroups)
}

func TestIdentity(t *testing.T) {
	t.Parallel()
	host := captureHost(t)
	start := time.Now()
	i := NewIdentity(t)
	t.Logf("identity ready in %v", time.Since(start))
	const h1 = "org.freedesktop.hostname1"
	const td = "org.freedesktop.timedate1"
	const lo = "org.freedesktop.locale1"

	if got, want := prop(t, i, h1, "Hostname"), fmt.Sprintf("s %q", host.hostname); got != want {
		t.Errorf("initial Hostname %s, want the host's %s", got, want)
	}

	call(t, i, h1, "SetStaticHostname", "sb", "tb-static", "false")
	if got := prop(t, i, h1, "StaticHostname"); got != `s "tb-static"` {
		t.Errorf("StaticHostname %s", got)
	}
	if got := prop(t, i, h1, "Hostname"); got != `s "tb-static"` {
		t.Errorf("Hostname %s", got)
	}
	if got := exec1(t, i, "cat", "/etc/hostname"); got != "tb-static" {
		t.Errorf("bed /etc/hostname %q", got)
	}
	if got := exec1(t, i, "hostname"); got != "tb-static" {
		t.Errorf("bed hostname %q", got)
	}
	if b, err := os.ReadFile(filepath.Join(i.Dir, "etc.upper", "hostname")); err != nil || strings.TrimSpace(string(b)) != "tb-static" {
		t.Errorf("overlay upper hostname: %q %v", b, err)
	}
	call(t, i, h1, "SetPrettyHostname", "sb", "TB Pretty", "false")
	if got := exec1(t, i, "cat", "/etc/machine-info"); !strings.Contains(got, `PRETTY_HOSTNAME="TB Pretty"`) {
		t.Errorf("bed /etc/machine-info %q", got)
	}

	call(t, i, td, "SetTimezone", "sb", "Europe/Berlin", "false")
	if got := prop(t, i, td, "Timezone"); got != `s "Europe/Berlin"` {
		t.Errorf("Timezone %s", got)
	}
	if got := exec1(t, i, "readlink", "/etc/localtime"); !strings.HasSuffix(got, "zoneinfo/Europe/Berlin") {
		t.Errorf("bed /etc/localtime -> %q", got)
	}

	call(t, i, lo, "SetLocale", "asb", "1", "LANG=C.UTF-8", "false")
	if got := prop(t, i, lo, "Locale"); got != `as 1 "LANG=C.UTF-8"` {
		t.Errorf("Locale %s", got)
	}
	if got := exec1(t, i, "cat", "/etc/default/locale"); !strings.Contains(got, "LANG=C.UTF-8") {
		t.Errorf("bed /etc/default/locale %q", got)
	}

	call(t, i, lo, "SetX11Keyboard", "ssssbb", "de", "pc105", "nodeadkeys", "", "false", "false")
	if got := prop(t, i, lo, "X11Layout"); got != `s "de"` {
		t.Errorf("X11Layout %s", got)
	}
	if got := exec1(t, i, "cat", "/etc/default/keyboard"); !strings.Contains(got, "XKBLAYOUT=de") || !strings.Contains(got, "XKBVARIANT=nodeadkeys") {
		t.Errorf("bed /etc/default/keyboard %q", got)
	}

	// Debian ships no keymaps where localed looks (*.map under
	// /usr/share/keymaps, /usr/share/kbd/keymaps, /usr/lib/kbd/keymaps).
	if out, err := callErr(t, i, lo, "SetVConsoleKeyboard", "ssbb", "de", "", "false", "false"); err == nil {
		t.Logf("SetVConsoleKeyboard de works here: %s VConsoleKeymap %s", out, prop(t, i, lo, "VConsoleKeymap"))
	} else if !strings.Contains(err.Error(), "Keymap de is not installed") {
		t.Errorf("SetVConsoleKeyboard de: %v", err)
	}
	call(t, i, lo, "SetVConsoleKeyboard", "ssbb", "", "", "false", "false")

	// No NTP service: all properties readable, SetNTP refused.
	if out, err := i.Busctl(ctxT(t), "call", td, "/org/freedesktop/timedate1", "org.freedesktop.DBus.Properties", "GetAll", "s", td); err != nil ||
		!strings.Contains(out, `"CanNTP" b false`) || !strings.Contains(out, `"NTP" b false`) {
		t.Errorf("timedate1 GetAll: %q %v", out, err)
	}
	if _, err := callErr(t, i, td, "SetNTP", "bb", "true", "false"); err == nil || !strings.Contains(err.Error(), "NTP not supported") {
		t.Errorf("SetNTP: %v", err)
	}
	// The daemons can never set the host clock: +1µs is refused with
	// AccessDenied "Failed to set local time: Operation not permitted"
	// (busctl prints "Access denied").
	if _, err := callErr(t, i, td, "SetTime", "xbb", "1", "true", "false"); err == nil || !strings.Contains(err.Error(), "Access denied") {
		t.Errorf("SetTime: %v", err)
	}
	call(t, i, td, "SetLocalRTC", "bbb", "true", "false", "false")
	if got := prop(t, i, td, "LocalRTC"); got != "b true" {
		t.Errorf("LocalRTC %s", got)
	}
	if got := exec1(t, i, "cat", "/etc/adjtime"); !strings.Contains(got, "LOCAL") {
		t.Errorf("bed /etc/adjtime %q", got)
	}
	call(t, i, td, "SetLocalRTC", "bbb", "false", "false", "false")

	// They run without CAP_SYS_TIME.
	out, err := i.Busctl(ctxT(t), "call", "org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus", "GetConnectionUnixProcessID", "s", td)
	if err != nil {
		t.Fatal(err)
	}
	nspid := strings.TrimPrefix(strings.TrimSpace(out), "u ")
	status := exec1(t, i, "cat", "/proc/"+nspid+"/status")
	for _, l := range strings.Split(status, "\n") {
		if k, v, ok := strings.Cut(l, ":"); ok && (k == "CapEff" || k == "CapBnd") {
			caps, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			if err != nil || caps&(1<<25) != 0 {
				t.Errorf("timedated %s %s has CAP_SYS_TIME", k, strings.TrimSpace(v))
			}
		}
	}

	host.assertSame(t)
}

// The daemons exit after ~30s idle; dbus-daemon activates them again in
// the namespaces, and they read back what they wrote to the overlay.
func TestIdentityReactivation(t *testing.T) {
	if testing.Short() {
		t.Skip("waits for the daemons' 30s idle exit")
	}
	t.Parallel()
	i := NewIdentity(t)
	ctx := ctxT(t)
	const h1 = "org.freedesktop.hostname1"
	call(t, i, h1, "SetStaticHostname", "sb", "before-idle", "false")
	owner := func() string {
		out, err := i.Busctl(ctx, "call", "org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus", "NameHasOwner", "s", h1)
		if err != nil {
			t.Fatal(err)
		}
		return strings.TrimSpace(out)
	}
	start := time.Now()
	for owner() != "b false" {
		if time.Since(start) > 2*time.Minute {
			t.Fatal("hostnamed did not exit when idle")
		}
		time.Sleep(time.Second)
	}
	t.Logf("hostnamed exited after %v idle", time.Since(start).Round(time.Second))
	if got := prop(t, i, h1, "StaticHostname"); got != `s "before-idle"` {
		t.Errorf("StaticHostname after reactivation %s", got)
	}
	if owner() != "b true" {
		t.Errorf("hostnamed not back on the bus")
	}
	call(t, i, h1, "SetStaticHostname", "sb", "after-idle", "false")
	if got := exec1(t, i, "cat", "/etc/hostname"); got != "after-idle" {
		t.Errorf("bed /etc/hostname %q", got)
	}
}

func TestIdentityCloseKillsEverything(t *testing.T) {
	t.Parallel()
	dir := bedTempDir(t, "tb-id-")
	i, err := StartIdentity(ctxT(t), dir)
	if err != nil {
		unavailable(t, "hostnamed/timedated/localed", err)
	}
	closed := false
	t.Cleanup(func() {
		if !closed {
			i.Close()
		}
	})
	pids := nsPIDs(t, i.proc.pid())
	if len(pids) < 5 { // sh, dbus-daemon, three daemons
		t.Fatalf("bed has only %d processes", len(pids))
	}
	if err := i.Close(); err != nil {
		t.Fatal(err)
	}
	closed = true
	assertGone(t, pids, nil)
	// The overlay was only mounted in the bed's mount namespace.
	mi, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(mi), dir) {
		t.Errorf("a mount below %s is visible on the host", dir)
	}
}

// Beds started at the same time share nothing.
func TestConcurrentBeds(t *testing.T) {
	t.Parallel()
	host := captureHost(t)
	const n = 2
	var (
		mu   sync.Mutex
		ums  []*UserManager
		ids  []*Identity
		errs []error
		wg   sync.WaitGroup
	)
	start := time.Now()
	ctx := ctxT(t)
	for k := 0; k < n; k++ {
		udir, idir := bedTempDir(t, "tb-user-"), bedTempDir(t, "tb-id-")
		wg.Add(2)
		go func() {
			defer wg.Done()
			m, err := StartUserManager(ctx, udir)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, err)
				return
			}
			t.Cleanup(func() { m.Close() })
			ums = append(ums, m)
		}()
		go func() {
			defer wg.Done()
			i, err := StartIdentity(ctx, idir)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, err)
				return
			}
			t.Cleanup(func() { i.Close() })
			ids = append(ids, i)
		}()
	}
	wg.Wait()
	if len(errs) > 0 {
		unavailable(t, "concurrent beds", errors.Join(errs...))
	}
	t.Logf("%d user managers and %d identity beds started concurrently in %v", n, n, time.Since(start))

	for k, m := range ums {
		if err := m.WriteUnit("same.service", "[Service]\nExecStart=/bin/sleep infinity\n"); err != nil {
			t.Fatal(err)
		}
		if k == 0 {
			if _, err := m.Systemctl(ctx, "start", "same.service"); err != nil {
				t.Fatal(err)
			}
		}
	}
	if out, _ := ums[0].Systemctl(ctx, "is-active", "same.service"); strings.TrimSpace(out) != "active" {
		t.Errorf("bed 0 same.service %q", out)
	}
	if out, _ := ums[1].Systemctl(ctx, "is-active", "same.service"); strings.TrimSpace(out) != "inactive" {
		t.Errorf("bed 1 same.service %q, want inactive (bed 0 started its own)", out)
	}

	for k, i := range ids {
		call(t, i, "org.freedesktop.hostname1", "SetStaticHostname", "sb", fmt.Sprintf("bed-%d", k), "false")
	}
	for k, i := range ids {
		if got := exec1(t, i, "hostname"); got != fmt.Sprintf("bed-%d", k) {
			t.Errorf("identity %d hostname %q", k, got)
		}
		if got := exec1(t, i, "cat", "/etc/hostname"); got != fmt.Sprintf("bed-%d", k) {
			t.Errorf("identity %d /etc/hostname %q", k, got)
		}
	}
	host.assertSame(t)
}

func TestStartRejectsBadDir(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	ctx := ctxT(t)
	if _, err := StartIdentity(ctx, filepath.Join(t.TempDir(), "missing")); err == nil {
		t.Error("StartIdentity on a missing dir worked")
	}
	long := filepath.Join(t.TempDir(), strings.Repeat("x", 100))
	if err := os.Mkdir(long, 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := StartUserManager(ctx, long); err == nil || !strings.Contains(err.Error(), "too long") {
		t.Errorf("StartUserManager on a long dir: %v", err)
	}
}

func envValue(env []string, key string) string {
	for k := len(env) - 1; k >= 0; k-- {
		if v, ok := strings.CutPrefix(env[k], key+"="); ok {
			return v
		}
	}
	return ""
}
