package main

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// bearer adds the API token to every request.
type bearer struct {
	token string
	next  http.RoundTripper
}

func (b bearer) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+b.token)
	return b.next.RoundTrip(r)
}

func mcpHTTP(t *testing.T, endpoint string, hc *http.Client) (*mcp.ClientSession, error) {
	t.Helper()
	c := mcp.NewClient(&mcp.Implementation{Name: "op-dbus-e2e-http", Version: "0.2"}, nil)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cs, err := c.Connect(ctx, &mcp.StreamableClientTransport{Endpoint: endpoint, HTTPClient: hc, MaxRetries: -1}, nil)
	if err == nil {
		t.Cleanup(func() { cs.Close() })
	}
	return cs, err
}

func freePort(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// `serve --mcp` serves MCP over streamable HTTP on the API's listeners:
// on the unix socket, and on TCP only with the bearer token. Tools answer
// with the CLI's data; apply waits in the daemon for `op-dbus commit`.
func TestTestbedServeMCPStreamableHTTP(t *testing.T) {
	b, env := identityBed(t)
	dir := t.TempDir()
	sd := filepath.Join(dir, "state")
	loc := strings.Trim(strings.TrimPrefix(busProp(t, b, "org.freedesktop.hostname1", "Location"), "s "), `"`)
	docJSON, _ := json.Marshal(map[string]any{"version": 1, "plugins": map[string]any{"hostname": map[string]any{"location": loc}}})
	doc := writeFile(t, dir, "host.json", string(docJSON))
	sock := filepath.Join(dir, "api.sock")
	tokenFile := writeFile(t, dir, "token", "s3cret-token-for-e2e\n")
	if err := os.Chmod(tokenFile, 0o600); err != nil {
		t.Fatal(err)
	}
	addr := freePort(t)
	startServe(t, env, "--state-dir="+sd, "--confirm-in-process", "serve", "--state", doc, "--api-socket", sock,
		"--api-listen", addr, "--api-token-file", tokenFile, "--mcp", "--mcp-allow-apply", "--confirm-within=4s")

	unix := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", sock)
	}}}
	cs, err := mcpHTTP(t, "http://op-dbus/mcp", unix)
	if err != nil {
		t.Fatalf("MCP over the unix socket: %v", err)
	}
	var q map[string]any
	mcpCall(t, cs, "query_state", map[string]any{"plugins": []string{"hostname"}}, &q)
	r := run(t, env, "", "--state-dir="+sd, "query", "-p", "hostname")
	wantCode(t, r, 0, "query")
	var cliQ map[string]any
	if err := json.Unmarshal([]byte(r.stdout), &cliQ); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(q, cliQ) {
		t.Errorf("query_state over HTTP differs from the CLI:\nmcp %v\ncli %v", q, cliQ)
	}

	// TCP: no token, no MCP; the right token, MCP.
	if _, err := mcpHTTP(t, "http://"+addr+"/mcp", &http.Client{}); err == nil || !strings.Contains(err.Error(), "Unauthorized") {
		t.Errorf("MCP over TCP without a token: %v", err)
	}
	tcs, err := mcpHTTP(t, "http://"+addr+"/mcp", &http.Client{Transport: bearer{"s3cret-token-for-e2e", http.DefaultTransport}})
	if err != nil {
		t.Fatalf("MCP over TCP with the token: %v", err)
	}
	var p mcpPlan
	mcpCall(t, tcs, "plan", map[string]any{"document": map[string]any{"version": 1, "plugins": map[string]any{"hostname": map[string]any{"location": "via mcp http"}}}}, &p)
	var a struct {
		Success         bool `json:"success"`
		AwaitingConfirm bool `json:"awaiting_confirm"`
	}
	mcpCall(t, tcs, "apply", map[string]any{"plan_hash": p.PlanHash}, &a)
	if !a.Success || !a.AwaitingConfirm {
		t.Fatalf("apply: %+v", a)
	}
	if got := busProp(t, b, "org.freedesktop.hostname1", "Location"); got != `s "via mcp http"` {
		t.Fatalf("Location after apply: %s", got)
	}
	wantCode(t, run(t, env, "", "--state-dir="+sd, "commit"), 0, "commit")
	time.Sleep(5 * time.Second) // past the confirm deadline
	if got := busProp(t, b, "org.freedesktop.hostname1", "Location"); got != `s "via mcp http"` {
		t.Fatalf("committed apply was rolled back: Location %s", got)
	}
	r = run(t, env, "", "--state-dir="+sd, "audit", "log", "-o", "json")
	if !strings.Contains(r.stdout, "mcp:op-dbus-e2e-http/0.2") {
		t.Errorf("audit log does not name the MCP client:\n%s", r.stdout)
	}
}
