package testbed

import (
	"context"
	"encoding/json"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// NetworkManager in the bed answers nmcli over the private bus from the
// host, creates a bridge with an address that `ip -j addr` in the bed sees
// and the host does not, keeps its profiles in Dir, and is gone (with its
// links) after Close.
func TestNetworkManagerBed(t *testing.T) {
	n := NewNetworkManager(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if out, err := n.Nmcli(ctx, "-t", "-f", "RUNNING", "general"); err != nil || strings.TrimSpace(out) != "running" {
		t.Fatalf("nmcli general: %q, %v", out, err)
	}
	const br = "tbnmbr0"
	if out, err := n.Nmcli(ctx, "connection", "add", "type", "bridge", "con-name", br, "ifname", br,
		"ipv4.method", "manual", "ipv4.addresses", "10.98.0.1/24", "ipv6.method", "disabled"); err != nil {
		t.Fatalf("nmcli connection add: %v\n%s", err, out)
	}
	if _, err := os.Stat(n.KeyfileDir + "/" + br + ".nmconnection"); err != nil {
		t.Fatalf("profile not written to the bed's keyfile dir: %v", err)
	}
	// NetworkManager activates it by itself (autoconnect); wait for the
	// address.
	var addrs string
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		out, err := n.Exec(ctx, "ip", "-j", "addr", "show", "dev", br)
		if err == nil {
			var links []struct {
				AddrInfo []struct {
					Local     string `json:"local"`
					Prefixlen int    `json:"prefixlen"`
				} `json:"addr_info"`
			}
			if json.Unmarshal([]byte(out), &links) == nil && len(links) == 1 {
				var got []string
				for _, a := range links[0].AddrInfo {
					got = append(got, a.Local)
				}
				addrs = strings.Join(got, ",")
				if strings.Contains(addrs, "10.98.0.1") {
					break
				}
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	if !strings.Contains(addrs, "10.98.0.1") {
		t.Fatalf("bridge %s has addresses %q, want 10.98.0.1\n%s", br, addrs, n.Log())
	}
	if _, err := os.Stat("/sys/class/net/" + br); err == nil {
		t.Fatalf("bridge %s made in the bed appeared on the host", br)
	}
	if h, _ := os.Hostname(); h != "" {
		if out, err := n.Exec(ctx, "hostname"); err != nil || strings.TrimSpace(out) != h {
			t.Errorf("bed hostname %q (%v), host %q", out, err, h)
		}
	}
	pid, nmPID := n.PID(), n.NetworkManagerPID()
	if nmPID == 0 || nmPID == pid {
		t.Errorf("NetworkManagerPID %d (holder %d): want NetworkManager's own PID", nmPID, pid)
	}
	if comm, _ := os.ReadFile("/proc/" + strconv.Itoa(nmPID) + "/comm"); strings.TrimSpace(string(comm)) != "NetworkManager" {
		t.Errorf("NetworkManagerPID %d is %q", nmPID, comm)
	}
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(pid, 0); err == nil {
		t.Errorf("holder %d still alive after Close", pid)
	}
	if err := syscall.Kill(nmPID, 0); err == nil {
		t.Errorf("NetworkManager %d still alive after Close", nmPID)
	}
	if err := n.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

// nsInode is the inode of /proc/PID/ns/NAME: equal inodes, same namespace.
func nsInode(t *testing.T, path string) uint64 {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		t.Fatalf("stat %s: %v", path, err)
	}
	return st.Ino
}

// RestartNetworkManager kills NetworkManager and waits for the next one:
// a new PID answering on the bus, in the same network namespace, with the
// profiles stored before the restart and its links still there.
func TestNetworkManagerBedRestart(t *testing.T) {
	n := NewNetworkManager(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	const br = "tbnmrs0"
	if out, err := n.Nmcli(ctx, "connection", "add", "type", "bridge", "con-name", br, "ifname", br,
		"ipv4.method", "manual", "ipv4.addresses", "10.98.1.1/24", "ipv6.method", "disabled"); err != nil {
		t.Fatalf("nmcli connection add: %v\n%s", err, out)
	}
	// Killed mid-activation, NetworkManager would take the half-configured
	// link for an external one and generate an in-memory profile for it
	// on restart (it does so on a host too): restart once it is active.
	waitNMActivated(ctx, t, n, br, "before the restart")
	netns := nsInode(t, n.NetNSPath())
	before := n.NetworkManagerPID()
	if before == 0 {
		t.Fatalf("no NetworkManager PID before the restart\n%s", n.Log())
	}
	if err := n.RestartNetworkManager(ctx); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(before, 0); err == nil {
		t.Errorf("old NetworkManager %d still alive after the restart", before)
	}
	after := n.NetworkManagerPID()
	if after == 0 || after == before {
		t.Fatalf("NetworkManager PID %d after the restart, %d before", after, before)
	}
	if got := nsInode(t, "/proc/"+strconv.Itoa(after)+"/ns/net"); got != netns {
		t.Errorf("new NetworkManager in network namespace %d, the bed's is %d", got, netns)
	}
	if got := nsInode(t, n.NetNSPath()); got != netns {
		t.Errorf("NetNSPath changed namespace across the restart: %d, was %d", got, netns)
	}
	if out, err := n.Nmcli(ctx, "-t", "-f", "RUNNING", "general"); err != nil || strings.TrimSpace(out) != "running" {
		t.Fatalf("nmcli general after the restart: %q, %v", out, err)
	}
	out, err := n.Nmcli(ctx, "-g", "connection.id,ipv4.addresses", "connection", "show", br)
	if err != nil || !strings.Contains(out, br) || !strings.Contains(out, "10.98.1.1/24") {
		t.Fatalf("profile %s after the restart: %q, %v", br, out, err)
	}
	// The link NetworkManager made before the restart outlived it, and the
	// new NetworkManager assumes it: the profile is active again, as after
	// a restart of the service on a host.
	if out, err := n.Exec(ctx, "ip", "-o", "-4", "addr", "show", "dev", br); err != nil || !strings.Contains(out, "10.98.1.1/24") {
		t.Errorf("bridge %s or its address gone after the restart: %q, %v", br, out, err)
	}
	waitNMActivated(ctx, t, n, br, "after the restart")
	// A second restart works too (the holder keeps looping).
	if err := n.RestartNetworkManager(ctx); err != nil {
		t.Fatal(err)
	}
	if out, err := n.Nmcli(ctx, "-g", "connection.id", "connection", "show", br); err != nil || strings.TrimSpace(out) != br {
		all, _ := n.Nmcli(ctx, "-f", "NAME,UUID,TYPE,DEVICE,STATE,FILENAME", "connection", "show")
		t.Errorf("profile %s after the second restart: %q, %v\n%s", br, out, err, all)
	}
}

// Start runs a daemon in the bed's network namespace (it sees a bridge
// created there, the host does not have it); Close kills and reaps it.
func TestNetworkManagerBedStart(t *testing.T) {
	n := NewNetworkManager(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	const br = "tbnmst0"
	if out, err := n.Exec(ctx, "ip", "link", "add", br, "type", "bridge"); err != nil {
		t.Fatalf("ip link add: %v\n%s", err, out)
	}
	cmd, err := n.Start("lister", nil, "sh", "-c", "ip -o link show dev "+br+" && echo listed; exec sleep 3600")
	if err != nil {
		t.Fatal(err)
	}
	pid := cmd.Process.Pid
	var log string
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		b, _ := os.ReadFile(n.Dir + "/lister.log")
		if log = string(b); strings.Contains(log, "listed") {
			break
		}
	}
	if !strings.Contains(log, br) || !strings.Contains(log, "listed") {
		t.Fatalf("process started in the bed does not see bridge %s; its log:\n%s", br, log)
	}
	if got, want := nsInode(t, "/proc/"+strconv.Itoa(pid)+"/ns/net"), nsInode(t, n.NetNSPath()); got != want {
		t.Errorf("started process in network namespace %d, the bed's is %d", got, want)
	}
	if got, want := nsInode(t, "/proc/"+strconv.Itoa(pid)+"/ns/uts"), nsInode(t, "/proc/"+strconv.Itoa(n.PID())+"/ns/uts"); got != want {
		t.Errorf("started process in UTS namespace %d, the bed's is %d", got, want)
	}
	if err := syscall.Kill(pid, 0); err != nil {
		t.Fatalf("started process %d not running: %v", pid, err)
	}
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(pid, 0); err == nil {
		t.Errorf("started process %d still alive (or unreaped) after Close", pid)
	}
	if cmd.ProcessState == nil {
		t.Errorf("Close did not reap the started process")
	}
	if _, err := n.Start("late", nil, "true"); err == nil {
		t.Errorf("Start after Close succeeded")
	}
}

// waitNMActivated fails unless nmcli shows profile conn (the only one with
// that id) activated within 30s.
func waitNMActivated(ctx context.Context, t *testing.T, n *NetworkManager, conn, when string) {
	t.Helper()
	var state string
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		out, _ := n.Nmcli(ctx, "-g", "GENERAL.STATE", "connection", "show", conn)
		if state = strings.TrimSpace(out); state == "activated" {
			return
		}
	}
	all, _ := n.Nmcli(ctx, "-f", "NAME,UUID,TYPE,DEVICE,STATE,FILENAME", "connection", "show")
	t.Fatalf("profile %s is %q %s, want activated\n%s\n%s", conn, state, when, all, n.Log())
}
