package api

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// DefaultSocket is where the API listens when ListenOptions.Socket is empty.
const DefaultSocket = "/run/op-dbus/api.sock"

// ListenOptions say where Serve listens.
type ListenOptions struct {
	Socket            string      // unix socket path (default /run/op-dbus/api.sock), created with Mode (default 0660); parent dir created 0755
	Mode              os.FileMode // socket mode, default 0660
	TCP               string      // host:port; only with TokenFile
	TokenFile         string      // bearer token file (mode must not be group/other readable); required for TCP
	CertFile, KeyFile string      // TLS for TCP when both set
}

// shutdownGrace bounds the graceful shutdown.
const shutdownGrace = 5 * time.Second

// Serve listens as configured and serves h until ctx is done (graceful
// shutdown, 5 s), removing the socket file. Everything is checked before
// anything listens: a TCP address without a token file is an error.
func Serve(ctx context.Context, h http.Handler, lo ListenOptions) error {
	if lo.Socket == "" {
		lo.Socket = DefaultSocket
	}
	if lo.Mode == 0 {
		lo.Mode = 0o660
	}
	var token []byte
	var tlsConf *tls.Config
	if lo.TCP != "" {
		if lo.TokenFile == "" {
			return fmt.Errorf("api: --api-listen %s needs a bearer token file (--api-token-file); the TCP API is never open without one", lo.TCP)
		}
		var err error
		if token, err = readToken(lo.TokenFile); err != nil {
			return err
		}
		if (lo.CertFile == "") != (lo.KeyFile == "") {
			return errors.New("api: TLS needs both a certificate and a key file")
		}
		if lo.CertFile != "" {
			cert, err := tls.LoadX509KeyPair(lo.CertFile, lo.KeyFile)
			if err != nil {
				return fmt.Errorf("api: TLS certificate: %w", err)
			}
			tlsConf = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
		}
	} else if lo.TokenFile != "" || lo.CertFile != "" || lo.KeyFile != "" {
		return errors.New("api: a token file or TLS certificate is only used with a TCP address (--api-listen)")
	}

	ul, err := listenUnix(lo.Socket, lo.Mode)
	if err != nil {
		return err
	}
	defer os.Remove(lo.Socket)
	servers := []*http.Server{newServer(h, func(ctx context.Context, c net.Conn) context.Context {
		return withClient(ctx, peerClient(c))
	})}
	listeners := []net.Listener{ul}

	if lo.TCP != "" {
		tl, err := net.Listen("tcp", lo.TCP)
		if err != nil {
			ul.Close()
			return fmt.Errorf("api: listen on %s: %w", lo.TCP, err)
		}
		if tlsConf != nil {
			tl = tls.NewListener(tl, tlsConf)
		}
		servers = append(servers, newServer(requireToken(h, token), nil))
		listeners = append(listeners, tl)
	}

	errc := make(chan error, len(servers))
	for i, s := range servers {
		go func() { errc <- s.Serve(listeners[i]) }()
	}
	var first error
	select {
	case <-ctx.Done():
	case err := <-errc:
		first = fmt.Errorf("api: %w", err)
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), shutdownGrace)
	defer cancel()
	for _, s := range servers {
		if err := s.Shutdown(sctx); err != nil {
			_ = s.Close()
		}
	}
	return first
}

func newServer(h http.Handler, connCtx func(context.Context, net.Conn) context.Context) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       time.Minute,
		WriteTimeout:      applyTimeout + time.Minute,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ConnContext:       connCtx,
	}
}

// listenUnix binds the socket in a private directory next to path, sets
// its mode and renames it into place, so that it is never reachable with
// a wider mode. A stale socket (nobody listening) is replaced; a live one
// is an error.
func listenUnix(path string, mode os.FileMode) (net.Listener, error) {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("api: socket directory: %w", err)
	}
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode()&os.ModeSocket == 0 {
			return nil, fmt.Errorf("api: %s exists and is not a socket; remove it or pick another --api-socket", path)
		}
		if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
			c.Close()
			return nil, fmt.Errorf("api: %s is in use by another server (is op-dbus serve already running?)", path)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("api: remove stale socket: %w", err)
		}
	}
	tmp, err := os.MkdirTemp(dir, ".api-sock-")
	if err != nil {
		return nil, fmt.Errorf("api: %w", err)
	}
	defer os.RemoveAll(tmp)
	tp := filepath.Join(tmp, "s")
	l, err := net.Listen("unix", tp)
	if err != nil {
		return nil, fmt.Errorf("api: listen on %s: %w", path, err)
	}
	l.(*net.UnixListener).SetUnlinkOnClose(false)
	if err := os.Chmod(tp, mode); err != nil {
		l.Close()
		return nil, fmt.Errorf("api: chmod socket: %w", err)
	}
	if err := os.Rename(tp, path); err != nil {
		l.Close()
		return nil, fmt.Errorf("api: place socket at %s: %w", path, err)
	}
	return l, nil
}

// peerClient names a unix-socket peer by its uid (SO_PEERCRED).
func peerClient(c net.Conn) string {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return "unix"
	}
	rc, err := uc.SyscallConn()
	if err != nil {
		return "unix"
	}
	var cred *syscall.Ucred
	var cerr error
	if err := rc.Control(func(fd uintptr) {
		cred, cerr = syscall.GetsockoptUcred(int(fd), syscall.SOL_SOCKET, syscall.SO_PEERCRED)
	}); err != nil || cerr != nil || cred == nil {
		return "unix"
	}
	return "uid:" + strconv.FormatUint(uint64(cred.Uid), 10)
}

// readToken reads a bearer token file that only its owner can read.
func readToken(path string) ([]byte, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("api: token file: %w", err)
	}
	if fi.Mode().Perm()&0o044 != 0 {
		return nil, fmt.Errorf("api: token file %s has mode %04o: it must not be readable by group or others (chmod 600 %s)", path, fi.Mode().Perm(), path)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("api: token file: %w", err)
	}
	t := strings.TrimSpace(string(b))
	if len(t) < 16 {
		return nil, fmt.Errorf("api: token file %s: the token must be at least 16 characters (e.g. head -c 32 /dev/urandom | base64 > %s)", path, path)
	}
	sum := sha256.Sum256([]byte(t))
	return sum[:], nil
}

// requireToken admits requests bearing the token (compared in constant
// time, as SHA-256 digests so its length does not leak either).
func requireToken(h http.Handler, tokenSum []byte) http.Handler {
	hh, _ := h.(*handler)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		auth := r.Header.Get("Authorization")
		scheme, tok, ok := strings.Cut(auth, " ")
		var code, msg string
		switch {
		case auth == "":
			code, msg = "unauthorized", "missing bearer token (send Authorization: Bearer <token>)"
		case !ok || !strings.EqualFold(scheme, "Bearer"):
			code, msg = "unauthorized", "the Authorization header must be Bearer <token>"
		default:
			sum := sha256.Sum256([]byte(strings.TrimSpace(tok)))
			if subtle.ConstantTimeCompare(sum[:], tokenSum) == 1 {
				h.ServeHTTP(w, r.WithContext(withClient(r.Context(), "token")))
				return
			}
			code, msg = "invalid_token", "wrong bearer token"
		}
		if code == "invalid_token" {
			w.Header().Set("WWW-Authenticate", `Bearer realm="op-dbus", error="invalid_token"`)
		} else {
			w.Header().Set("WWW-Authenticate", `Bearer realm="op-dbus"`)
		}
		if hh != nil && r.Method == http.MethodPost && r.URL.Path == "/v1/apply" {
			hh.refuse(withClient(r.Context(), "unauthenticated:"+r.RemoteAddr), "HTTP 401: "+msg, true)
		}
		writeJSON(w, http.StatusUnauthorized, errorBody{Error: msg, Code: code})
	})
}
