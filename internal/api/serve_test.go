package api

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/op-dbus/op-dbus/internal/control"
)

// serve runs Serve in the background and returns a stop function that
// waits for it and reports its error.
func serve(t *testing.T, h http.Handler, lo ListenOptions) func() error {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- Serve(ctx, h, lo) }()
	deadline := time.Now().Add(5 * time.Second)
	for {
		// Serve opens the unix socket first, then the TCP port: wait
		// for both.
		c, err := net.Dial("unix", lo.Socket)
		if err == nil {
			c.Close()
			if lo.TCP != "" {
				var tc net.Conn
				if tc, err = net.Dial("tcp", lo.TCP); err == nil {
					tc.Close()
				}
			}
		}
		if err == nil {
			break
		}
		select {
		case err := <-errc:
			cancel()
			t.Fatalf("Serve: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			cancel()
			t.Fatal("Serve did not start")
		}
		time.Sleep(10 * time.Millisecond)
	}
	var once sync.Once
	var serr error
	return func() error {
		once.Do(func() { cancel(); serr = <-errc })
		return serr
	}
}

func unixClient(sock string) *http.Client {
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", sock)
		}}}
}

func TestServeUnixSocket(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "run", "op-dbus", "api.sock")
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, 200, map[string]string{"client": clientOf(r.Context())})
	})
	stop := serve(t, h, ListenOptions{Socket: sock})
	fi, err := os.Stat(sock)
	if err != nil || fi.Mode()&os.ModeSocket == 0 || fi.Mode().Perm() != 0o660 {
		t.Fatalf("socket %v %v", fi.Mode(), err)
	}
	if di, _ := os.Stat(filepath.Dir(sock)); di.Mode().Perm() != 0o755 {
		t.Fatalf("socket dir mode %v", di.Mode())
	}
	st, body, _ := do(t, unixClient(sock), "GET", "http://op-dbus/v1/state", "", nil)
	var got map[string]string
	json.Unmarshal(body, &got)
	if want := fmt.Sprintf("uid:%d", os.Getuid()); st != 200 || got["client"] != want {
		t.Fatalf("over the socket: %d %s, want client %s", st, body, want)
	}
	// A second server on the same socket is refused.
	if err := Serve(context.Background(), h, ListenOptions{Socket: sock}); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Fatalf("second Serve: %v", err)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(sock); !os.IsNotExist(err) {
		t.Fatalf("socket left behind: %v", err)
	}
	// A stale socket file is replaced; Mode is honoured.
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	l.(*net.UnixListener).SetUnlinkOnClose(false)
	l.Close()
	stop = serve(t, h, ListenOptions{Socket: sock, Mode: 0o600})
	if fi, _ := os.Stat(sock); fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v", fi.Mode())
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
}

func freePort(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func TestServeTCPToken(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "api.sock")
	const token = "s3cret-token-0123456789"
	tf := filepath.Join(dir, "token")
	os.WriteFile(tf, []byte(token+"\n"), 0o600)

	// No token file, a readable token file, half a TLS pair: refused.
	if err := Serve(context.Background(), http.NotFoundHandler(), ListenOptions{Socket: sock, TCP: "127.0.0.1:0"}); err == nil || !strings.Contains(err.Error(), "token") {
		t.Fatalf("TCP without a token file: %v", err)
	}
	loose := filepath.Join(dir, "loose")
	os.WriteFile(loose, []byte(token), 0o644)
	if err := Serve(context.Background(), http.NotFoundHandler(), ListenOptions{Socket: sock, TCP: "127.0.0.1:0", TokenFile: loose}); err == nil || !strings.Contains(err.Error(), "group or others") {
		t.Fatalf("readable token file: %v", err)
	}
	if err := Serve(context.Background(), http.NotFoundHandler(), ListenOptions{Socket: sock, TCP: "127.0.0.1:0", TokenFile: tf, CertFile: "x"}); err == nil {
		t.Fatal("cert without key accepted")
	}
	if _, err := os.Lstat(sock); !os.IsNotExist(err) {
		t.Fatalf("a refused Serve left a socket: %v", err)
	}

	stateDir := filepath.Join(dir, "state")
	svc := control.New(control.Options{StateDir: stateDir})
	defer svc.Close()
	addr := freePort(t)
	stop := serve(t, NewHandler(svc, Options{StateDir: stateDir}), ListenOptions{Socket: sock, TCP: addr, TokenFile: tf})
	defer stop()
	c := &http.Client{Timeout: 10 * time.Second}
	u := "http://" + addr
	st, body, hdr := do(t, c, "GET", u+"/healthz", "", nil)
	wantError(t, "no token", st, body, 401, "unauthorized", "missing bearer token")
	if !strings.HasPrefix(hdr.Get("WWW-Authenticate"), "Bearer") {
		t.Fatalf("WWW-Authenticate %q", hdr.Get("WWW-Authenticate"))
	}
	st, body, hdr = do(t, c, "GET", u+"/healthz", "", nil, "Authorization", "Bearer wrong-token")
	wantError(t, "wrong token", st, body, 401, "invalid_token", "wrong bearer token")
	if !strings.Contains(hdr.Get("WWW-Authenticate"), "invalid_token") {
		t.Fatalf("WWW-Authenticate %q", hdr.Get("WWW-Authenticate"))
	}
	if strings.Contains(string(body), token) {
		t.Fatal("the token appears in a response")
	}
	st, body, _ = do(t, c, "GET", u+"/healthz", "", nil, "Authorization", "Bearer "+token)
	if st != 200 || !strings.Contains(string(body), `"ok"`) {
		t.Fatalf("right token: %d %s", st, body)
	}
	// An unauthenticated write is refused and audited.
	st, body, _ = do(t, c, "POST", u+"/v1/apply", "application/json", []byte(`{"plan_hash":"x"}`))
	wantError(t, "apply without token", st, body, 401, "unauthorized", "missing")
	es, err := svc.AuditLog(time.Time{}, "")
	if err != nil || len(es) != 1 || es[0].Result != "refused" || !strings.Contains(es[0].Message, "401") || !strings.HasPrefix(es[0].Actor.Client, "unauthenticated:") {
		t.Fatalf("audit %+v %v", es, err)
	}
	// The token authenticates: the apply gets as far as the plan check.
	st, body, _ = do(t, c, "POST", u+"/v1/apply", "application/json",
		[]byte(`{"plan_hash":"sha256:`+strings.Repeat("0", 64)+`"}`), "Authorization", "Bearer "+token)
	wantError(t, "apply with token", st, body, 409, "unknown_plan", "unknown plan hash")
	es, _ = svc.AuditLog(time.Time{}, "")
	if len(es) != 2 || es[1].Actor.Client != "token" {
		t.Fatalf("audit %+v", es)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
}
