package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/op-dbus/op-dbus/internal/mcpserver"
)

// A malformed frame on stdin is answered with its JSON-RPC 2.0 error and
// `op-dbus mcp` keeps serving the same client (issue 19): the SDK's own
// transport exited 1 on the first one.
func TestTestbedMCPStdioMalformedFramesKeepServing(t *testing.T) {
	_, env := identityBed(t)
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary, "--state-dir="+dir, "mcp")
	cmd.Env = append(os.Environ(), env...)
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	outp, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	// The child writes its stderr to a file, so the test may read it at
	// any time without racing a copying goroutine.
	errf, err := os.Create(filepath.Join(dir, "stderr"))
	if err != nil {
		t.Fatal(err)
	}
	defer errf.Close()
	cmd.Stderr = errf
	stderr := func() string { b, _ := os.ReadFile(errf.Name()); return string(b) }
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := make(chan string, 16)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(outp)
		sc.Buffer(nil, 16<<20)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	send := func(frame string) {
		t.Helper()
		if _, err := io.WriteString(in, frame+"\n"); err != nil {
			t.Fatalf("write to op-dbus mcp: %v\n%s", err, stderr())
		}
	}
	type answer struct {
		JSONRPC string          `json:"jsonrpc"`
		ID      json.RawMessage `json:"id"`
		Result  json.RawMessage `json:"result"`
		Error   *struct {
			Code int `json:"code"`
		} `json:"error"`
	}
	recv := func(what string) answer {
		t.Helper()
		select {
		case line, ok := <-lines:
			if !ok {
				t.Fatalf("%s: op-dbus mcp closed stdout\n%s", what, stderr())
			}
			var a answer
			if err := json.Unmarshal([]byte(line), &a); err != nil || a.JSONRPC != "2.0" {
				t.Fatalf("%s: not JSON-RPC 2.0: %q", what, line)
			}
			return a
		case <-ctx.Done():
			t.Fatalf("%s: no answer\n%s", what, stderr())
		}
		return answer{}
	}
	wantError := func(what string, code int, id string) {
		t.Helper()
		if a := recv(what); a.Error == nil || a.Error.Code != code || string(a.ID) != id {
			t.Errorf("%s: want error %d id %s, got %+v (id %s)", what, code, id, a.Error, a.ID)
		}
	}

	send(`{not json`)
	wantError("{not json", -32700, "null")
	send(`[]`)
	wantError("[]", -32600, "null")
	send(`{"jsonrpc":"1.0","id":7,"method":"tools/list"}`)
	wantError(`"jsonrpc":"1.0"`, -32600, "7")
	send(strings.Repeat("x", mcpserver.MaxFrameBytes+1))
	wantError("an over-long line", -32600, "null")

	send(`{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"raw","version":"0"}}}`)
	if a := recv("initialize"); a.Error != nil || string(a.ID) != "1" || !strings.Contains(string(a.Result), `"op-dbus"`) {
		t.Fatalf("initialize after bad frames: %+v %s", a.Error, a.Result)
	}
	send(`{"jsonrpc":"2.0","method":"notifications/initialized"}`)
	send(`{"jsonrpc":"2.0","id":2,"method":"tools/list"}`)
	if a := recv("tools/list"); a.Error != nil || string(a.ID) != "2" || !strings.Contains(string(a.Result), `"query_state"`) {
		t.Fatalf("tools/list after bad frames: %+v %s", a.Error, a.Result)
	}
	// Still running (not a zombie): answering was not its last act.
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", cmd.Process.Pid))
	if i := strings.LastIndexByte(string(stat), ')'); err != nil || i < 0 || i+2 >= len(stat) || stat[i+2] == 'Z' {
		t.Fatalf("op-dbus mcp is not running after the bad frames: %v %q\n%s", err, stat, stderr())
	}

	// The client hangs up: a clean exit.
	in.Close()
	for range lines {
	}
	if err := cmd.Wait(); err != nil {
		t.Errorf("op-dbus mcp after stdin closed: %v\n%s", err, stderr())
	}
	if strings.Contains(stderr(), "panic") || strings.Contains(stderr(), "DATA RACE") {
		t.Errorf("crash:\n%s", stderr())
	}
}
