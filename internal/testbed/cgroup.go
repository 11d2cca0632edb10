package testbed

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"
)

// systemd --user creates init.scope, app.slice, session.slice... below its
// own cgroup and, when that is a hierarchy root, moves every process it can
// see in the root into init.scope. Run as root on a host without systemd
// (cgroup v1 hybrid here), that reorganises the whole machine's cgroups
// (name=systemd, unified, pids, memory, cpu), and two beds would share
// /app.slice. So each user manager bed gets cgroups of its own,
// op-testbed-<test pid>-<n>, at the root of the name=systemd and unified
// hierarchies (or of the one cgroup2 hierarchy); its init moves itself in
// before starting anything, and its mount namespace only shows those two
// hierarchies under /sys/fs/cgroup, so systemd touches no controller
// hierarchy. The PID namespace hides every other process from it. Close
// removes the cgroups once the processes are gone; ones left by a test
// binary that was killed are removed by the next bed started.

var cgroupSeq atomic.Int64

type cgroupPlan struct {
	dirs   []string // per-bed cgroup directories (host paths), created; removed by close
	join   []string // shell lines for the bed's init: move itself into dirs (first thing)
	mounts []string // shell lines for the init, after / is made private
}

type cgMount struct{ point, fstype, opts string }

func cgroupMounts() ([]cgMount, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var ms []cgMount
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		left, right, ok := strings.Cut(sc.Text(), " - ")
		if !ok {
			continue
		}
		lf, rf := strings.Fields(left), strings.Fields(right)
		if len(lf) < 5 || len(rf) < 3 {
			continue
		}
		if rf[0] != "cgroup" && rf[0] != "cgroup2" {
			continue
		}
		ms = append(ms, cgMount{point: unescapeMountinfo(lf[4]), fstype: rf[0], opts: rf[2]})
	}
	return ms, sc.Err()
}

func unescapeMountinfo(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// planCgroups creates the per-bed cgroups and returns the init's lines to
// join them and to show only them to systemd.
func planCgroups() (*cgroupPlan, error) {
	ms, err := cgroupMounts()
	if err != nil {
		return nil, err
	}
	var named, unified string
	for _, m := range ms {
		switch {
		case m.fstype == "cgroup2" && unified == "":
			unified = m.point
		case m.fstype == "cgroup" && named == "" && hasOpt(m.opts, "name=systemd"):
			named = m.point
		}
	}
	if named == "" && unified == "" {
		return nil, errors.New("no name=systemd or cgroup2 hierarchy mounted; systemd --user needs one")
	}
	var roots []string
	for _, r := range []string{named, unified} {
		if r != "" {
			roots = append(roots, r)
		}
	}
	sweepStaleCgroups(roots)
	name := fmt.Sprintf("op-testbed-%d-%d", os.Getpid(), cgroupSeq.Add(1))
	p := &cgroupPlan{}
	for _, r := range roots {
		d := filepath.Join(r, name)
		if err := os.Mkdir(d, 0o755); err != nil {
			p.remove()
			return nil, fmt.Errorf("create cgroup: %w", err)
		}
		p.dirs = append(p.dirs, d)
		p.join = append(p.join, "echo 0 > "+shq(d+"/cgroup.procs"))
	}
	// Hybrid/legacy: hide the controller hierarchies (pids, memory, cpu...)
	// so the root user manager cannot make cgroups in them.
	if named != "" && filepath.Dir(named) != "/" && (unified == "" || filepath.Dir(unified) == filepath.Dir(named)) {
		parent := filepath.Dir(named)
		p.mounts = append(p.mounts,
			"mount -t tmpfs -o mode=0755 tmpfs "+shq(parent),
			"mkdir -p "+shq(named),
			"mount -t cgroup -o none,name=systemd cgroup "+shq(named))
		if unified != "" {
			p.mounts = append(p.mounts,
				"mkdir -p "+shq(unified),
				"mount -t cgroup2 cgroup2 "+shq(unified))
		}
	}
	return p, nil
}

func hasOpt(opts, o string) bool {
	for _, x := range strings.Split(opts, ",") {
		if x == o {
			return true
		}
	}
	return false
}

func (p *cgroupPlan) remove() {
	for _, d := range p.dirs {
		_ = removeCgroupTree(d, 0)
	}
}

// removeCgroupTree removes dir and the cgroups below it, deepest first,
// retrying while they are still busy, up to timeout.
func removeCgroupTree(dir string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		err := rmdirTree(dir)
		if err == nil || errors.Is(err, os.ErrNotExist) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("remove cgroup %s: %w", dir, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func rmdirTree(dir string) error {
	var dirs []string
	err := filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			dirs = append(dirs, path)
		}
		return nil
	})
	if err != nil {
		return err
	}
	sort.Slice(dirs, func(i, j int) bool { return len(dirs[i]) > len(dirs[j]) })
	for _, d := range dirs {
		if err := syscall.Rmdir(d); err != nil && !errors.Is(err, syscall.ENOENT) {
			return err
		}
	}
	return nil
}

// sweepStaleCgroups removes op-testbed-<pid>-* cgroups of test processes
// that no longer exist (killed before their cleanup ran). Best effort: a
// cgroup that still has processes cannot be removed and is left alone.
func sweepStaleCgroups(roots []string) {
	for _, r := range roots {
		ents, err := os.ReadDir(r)
		if err != nil {
			continue
		}
		for _, e := range ents {
			rest, ok := strings.CutPrefix(e.Name(), "op-testbed-")
			if !ok || !e.IsDir() {
				continue
			}
			pidStr, _, _ := strings.Cut(rest, "-")
			pid, err := strconv.Atoi(pidStr)
			if err != nil || pid == os.Getpid() {
				continue
			}
			if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
				_ = rmdirTree(filepath.Join(r, e.Name()))
			}
		}
	}
}
