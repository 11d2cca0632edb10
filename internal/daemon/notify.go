package daemon

import (
	"net"
	"os"
	"strconv"
	"time"
)

// Notify sends one sd_notify(3) message ("READY=1", "WATCHDOG=1",
// "STATUS=...") to the datagram socket systemd names in $NOTIFY_SOCKET.
// It reports false, nil when not run by systemd with Type=notify. A name
// starting with '@' is an abstract socket.
func Notify(state string) (bool, error) {
	sock := os.Getenv("NOTIFY_SOCKET")
	if sock == "" {
		return false, nil
	}
	if sock[0] == '@' {
		sock = "\x00" + sock[1:]
	}
	conn, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		return false, err
	}
	defer conn.Close()
	_ = conn.SetWriteDeadline(time.Now().Add(time.Second))
	if _, err := conn.Write([]byte(state)); err != nil {
		return false, err
	}
	return true, nil
}

// WatchdogInterval is how often to send WATCHDOG=1: half of $WATCHDOG_USEC,
// if systemd set it for this process ($WATCHDOG_PID absent or ours).
func WatchdogInterval() (time.Duration, bool) {
	us, err := strconv.ParseUint(os.Getenv("WATCHDOG_USEC"), 10, 64)
	if err != nil || us == 0 {
		return 0, false
	}
	if p := os.Getenv("WATCHDOG_PID"); p != "" {
		if pid, err := strconv.Atoi(p); err != nil || pid != os.Getpid() {
			return 0, false
		}
	}
	return time.Duration(us) * time.Microsecond / 2, true
}
