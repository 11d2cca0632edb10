package mcpserver

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"runtime"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"

	"github.com/op-dbus/op-dbus/internal/control"
)

// stdioPeer is a raw client of the real op-dbus MCP server over a
// StdioTransport on in-memory pipes.
type stdioPeer struct {
	t     *testing.T
	in    *io.PipeWriter
	lines chan []byte
	done  chan error
}

func startStdio(t *testing.T, maxFrame int) *stdioPeer {
	t.Helper()
	cr, cw := io.Pipe() // client -> server
	sr, sw := io.Pipe() // server -> client
	svc := control.New(control.Options{StateDir: t.TempDir(), Source: "mcp"})
	srv := New(svc, Options{Version: "test"})
	ctx, cancel := context.WithCancel(context.Background())
	p := &stdioPeer{t: t, in: cw, lines: make(chan []byte, 1024), done: make(chan error, 1)}
	go func() {
		p.done <- srv.Run(ctx, &StdioTransport{Reader: cr, Writer: sw, MaxFrameBytes: maxFrame})
	}()
	go func() {
		defer close(p.lines)
		br := bufio.NewReader(sr)
		for {
			line, err := br.ReadBytes('\n')
			if len(line) > 0 {
				p.lines <- line
			}
			if err != nil {
				return
			}
		}
	}()
	t.Cleanup(func() {
		cw.Close()
		select {
		case <-p.done:
		case <-time.After(10 * time.Second):
			t.Error("server did not stop 10s after its input closed")
		}
		cancel()
		sr.Close()
		svc.Close()
	})
	return p
}

func (p *stdioPeer) send(frame string) {
	p.t.Helper()
	if _, err := io.WriteString(p.in, frame+"\n"); err != nil {
		p.t.Fatalf("write %.80q: %v", frame, err)
	}
}

// recv returns the next line the server wrote.
func (p *stdioPeer) recv() []byte {
	p.t.Helper()
	select {
	case line, ok := <-p.lines:
		if !ok {
			select {
			case err := <-p.done:
				p.t.Fatalf("server ended: %v", err)
			default:
			}
			p.t.Fatal("server closed its output")
		}
		return line
	case err := <-p.done:
		p.t.Fatalf("server ended: %v", err)
	case <-time.After(30 * time.Second):
		p.t.Fatal("no answer in 30s")
	}
	return nil
}

type wireAnswer struct {
	JSONRPC string          `json:"jsonrpc"`
	ID      json.RawMessage `json:"id"`
	Result  json.RawMessage `json:"result"`
	Error   *struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

func decodeAnswer(t *testing.T, line []byte) wireAnswer {
	t.Helper()
	var a wireAnswer
	if err := json.Unmarshal(line, &a); err != nil || a.JSONRPC != "2.0" {
		t.Fatalf("not a JSON-RPC 2.0 answer (%v): %s", err, line)
	}
	return a
}

// wantError reads the next line and checks it is the error code for id.
func (p *stdioPeer) wantError(what string, code int, id string) {
	p.t.Helper()
	line := p.recv()
	a := decodeAnswer(p.t, line)
	if a.Error == nil || a.Error.Code != code || string(a.ID) != id || a.Result != nil {
		p.t.Errorf("%s: want error %d with id %s, got %s", what, code, id, line)
	}
}

// listTools sends tools/list with id and checks the answer lists the tools.
func (p *stdioPeer) listTools(id int) {
	p.t.Helper()
	p.send(fmt.Sprintf(`{"jsonrpc":"2.0","id":%d,"method":"tools/list"}`, id))
	line := p.recv()
	a := decodeAnswer(p.t, line)
	if a.Error != nil || string(a.ID) != fmt.Sprint(id) || !bytes.Contains(a.Result, []byte(`"query_state"`)) {
		p.t.Fatalf("tools/list %d: %s", id, line)
	}
}

func (p *stdioPeer) initialize() {
	p.t.Helper()
	p.send(`{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"raw","version":"0"}}}`)
	if a := decodeAnswer(p.t, p.recv()); a.Error != nil || string(a.ID) != "0" {
		p.t.Fatalf("initialize: %+v", a)
	}
	p.send(`{"jsonrpc":"2.0","method":"notifications/initialized"}`)
}

var badFrames = []struct {
	name, frame string
	code        int
	id          string
}{
	{"not json", `{not json`, -32700, "null"},
	{"truncated", `{"jsonrpc":"2.0","id":1,"method":"tools/li`, -32700, "null"},
	{"two values", `{"jsonrpc":"2.0","id":1,"method":"tools/list"} {}`, -32700, "null"},
	{"trailing garbage", `{"jsonrpc":"2.0","id":1,"method":"tools/list"}}}`, -32700, "null"},
	{"binary", "\x00\x01\x02\xff\xfe", -32700, "null"},
	{"empty batch", `[]`, -32600, "null"},
	{"empty batch with spaces", ` [ ] `, -32600, "null"},
	{"number", `42`, -32600, "null"},
	{"string", `"tools/list"`, -32600, "null"},
	{"null", `null`, -32600, "null"},
	{"jsonrpc 1.0", `{"jsonrpc":"1.0","id":3,"method":"tools/list"}`, -32600, "3"},
	{"jsonrpc 1.0 string id", `{"jsonrpc":"1.0","id":"abc","method":"tools/list"}`, -32600, `"abc"`},
	{"jsonrpc number", `{"jsonrpc":2.0,"id":4,"method":"tools/list"}`, -32600, "4"},
	{"no jsonrpc", `{"id":5,"method":"tools/list"}`, -32600, "5"},
	{"no jsonrpc notification", `{"method":"notifications/initialized"}`, -32600, "null"},
	{"null id", `{"jsonrpc":"2.0","id":null,"method":"tools/list"}`, -32600, "null"},
	{"bool id", `{"jsonrpc":"2.0","id":true,"method":"tools/list"}`, -32600, "null"},
	{"object id", `{"jsonrpc":"2.0","id":{"a":1},"method":"tools/list"}`, -32600, "null"},
	{"fractional id", `{"jsonrpc":"2.0","id":1.5,"method":"tools/list"}`, -32600, "1.5"},
	{"huge id", `{"jsonrpc":"2.0","id":9007199254740993,"method":"tools/list"}`, -32600, "9007199254740993"},
	{"method not a string", `{"jsonrpc":"2.0","id":6,"method":7}`, -32600, "6"},
	{"nothing", `{"jsonrpc":"2.0"}`, -32600, "null"},
	{"empty object", `{}`, -32600, "null"},
	{"response without result or error", `{"jsonrpc":"2.0","id":7}`, -32600, "7"},
	{"response with a bad error", `{"jsonrpc":"2.0","id":8,"error":5}`, -32600, "8"},
	{"too deep", `{"jsonrpc":"2.0","id":9,"method":"tools/list","params":{"a":` + strings.Repeat("[", 1100) + strings.Repeat("]", 1100) + `}}`, -32600, "9"},
	{"case-changed keys", `{"JSONRPC":"2.0","ID":10,"Method":"tools/list"}`, -32600, "null"},
}

// Every bad frame is answered with the JSON-RPC error the spec names and
// the server keeps serving, before and after initialize.
func TestStdioBadFramesAnsweredAndServing(t *testing.T) {
	p := startStdio(t, 0)
	// Before initialize.
	p.send(`{not json`)
	p.wantError("not json before initialize", -32700, "null")
	p.initialize()
	for i, tc := range badFrames {
		p.send(tc.frame)
		p.wantError(tc.name, tc.code, tc.id)
		if i%5 == 0 {
			p.listTools(100 + i)
		}
	}
	p.listTools(200)

	// Blank lines and a batch of only notifications get no answer: the
	// next line is the answer to the next request.
	p.send("")
	p.send(" \t\r")
	p.send(`[{"jsonrpc":"2.0","method":"notifications/initialized"}]`)
	p.listTools(201)

	// A CRLF line is one message.
	p.send(`{"jsonrpc":"2.0","id":202,"method":"ping"}` + "\r")
	if a := decodeAnswer(t, p.recv()); a.Error != nil || string(a.ID) != "202" {
		t.Errorf("ping with CRLF: %+v", a)
	}

	// Bad params are the SDK's to answer, and it answers without closing.
	p.send(`{"jsonrpc":"2.0","id":203,"method":"tools/call","params":"x"}`)
	if a := decodeAnswer(t, p.recv()); a.Error == nil || string(a.ID) != "203" {
		t.Errorf("tools/call with string params: %+v", a)
	}
	p.listTools(204)
}

// Batches are refused (MCP 2025-06-18 removed them): one -32600 per
// request, with its id, and per invalid element, with null.
func TestStdioBatchRefused(t *testing.T) {
	p := startStdio(t, 0)
	p.initialize()
	for _, tc := range []struct {
		name, frame string
		ids         []string
	}{
		{"numbers", `[1,2,3]`, []string{"null", "null", "null"}},
		{"requests and a notification", `[{"jsonrpc":"2.0","id":1,"method":"tools/list"},{"jsonrpc":"2.0","method":"notifications/initialized"},{"jsonrpc":"2.0","id":"b","method":"ping"}]`, []string{"1", `"b"`}},
		{"an invalid element", `[{"jsonrpc":"1.0","id":2,"method":"ping"},{"jsonrpc":"2.0","id":3,"method":"ping"}]`, []string{"2", "3"}},
		{"nested empty", `[[]]`, []string{"null"}},
	} {
		p.send(tc.frame)
		line := p.recv()
		var got []wireAnswer
		if err := json.Unmarshal(line, &got); err != nil || len(got) != len(tc.ids) {
			t.Errorf("%s: want %d errors in an array, got %s", tc.name, len(tc.ids), line)
			continue
		}
		for i, a := range got {
			if a.JSONRPC != "2.0" || a.Error == nil || a.Error.Code != -32600 || string(a.ID) != tc.ids[i] {
				t.Errorf("%s: answer %d: want -32600 id %s, got %s", tc.name, i, tc.ids[i], line)
			}
		}
	}
	p.listTools(10)
}

// A line over MaxFrameBytes is answered and dropped; the next is served.
// One of exactly MaxFrameBytes is a message like any other.
func TestStdioOverlongLine(t *testing.T) {
	p := startStdio(t, 0)
	p.initialize()
	pad := func(id, size int) string {
		head := fmt.Sprintf(`{"jsonrpc":"2.0","id":%d,"method":"ping","params":{"_meta":{"pad":"`, id)
		tail := `"}}}`
		return head + strings.Repeat("x", size-len(head)-len(tail)) + tail
	}
	over := pad(1, MaxFrameBytes+1)
	p.send(over)
	p.wantError("line of MaxFrameBytes+1", -32600, "null")
	p.listTools(2)

	p.send(pad(3, MaxFrameBytes))
	if a := decodeAnswer(t, p.recv()); string(a.ID) != "3" {
		t.Errorf("line of exactly MaxFrameBytes: %+v", a)
	}
	// Many times the limit, then a request on the same write.
	if _, err := io.WriteString(p.in, strings.Repeat("y", 3*MaxFrameBytes)+"\n"+`{"jsonrpc":"2.0","id":4,"method":"tools/list"}`+"\n"); err != nil {
		t.Fatal(err)
	}
	p.wantError("line of 3*MaxFrameBytes", -32600, "null")
	if a := decodeAnswer(t, p.recv()); a.Error != nil || string(a.ID) != "4" {
		t.Errorf("tools/list after an over-long line: %+v", a)
	}
}

// Error answers from the reader and the SDK's answers, written
// concurrently, never share a line.
func TestStdioFramesNeverInterleave(t *testing.T) {
	p := startStdio(t, 0)
	p.initialize()
	const n = 200
	var b strings.Builder
	for i := range n {
		fmt.Fprintf(&b, `{"jsonrpc":"2.0","id":%d,"method":"ping"}`+"\n", i)
		b.WriteString("{not json\n")
	}
	go io.WriteString(p.in, b.String())
	ids := map[string]bool{}
	for range 2 * n {
		a := decodeAnswer(t, p.recv())
		if a.Error != nil {
			if a.Error.Code != -32700 {
				t.Fatalf("unexpected error %+v", a)
			}
			continue
		}
		ids[string(a.ID)] = true
	}
	if len(ids) != n {
		t.Errorf("%d distinct ping answers, want %d", len(ids), n)
	}
}

// endless yields n bytes of 'x', then tail, without holding them.
type endless struct {
	n    int
	tail []byte
}

func (e *endless) Read(p []byte) (int, error) {
	if e.n > 0 {
		k := min(len(p), e.n)
		for i := range p[:k] {
			p[i] = 'x'
		}
		e.n -= k
		return k, nil
	}
	if len(e.tail) == 0 {
		return 0, io.EOF
	}
	k := copy(p, e.tail)
	e.tail = e.tail[k:]
	return k, nil
}

// The reader skips an over-long line without buffering it: 64 MiB pass
// through with a few MiB allocated at most.
func TestStdioLineReaderDoesNotBufferOverlong(t *testing.T) {
	const limit = 1 << 20
	lr := newLineReader(&endless{n: 64 << 20, tail: []byte("\n{}\nlast")}, limit)
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	line, tooLong, err := lr.next()
	runtime.ReadMemStats(&after)
	if !tooLong || line != nil || err != nil {
		t.Fatalf("over-long line: %q %v %v", line, tooLong, err)
	}
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 8<<20 {
		t.Errorf("skipping a 64 MiB line allocated %d bytes", alloc)
	}
	if line, tooLong, err = lr.next(); string(line) != "{}" || tooLong || err != nil {
		t.Errorf("next line: %q %v %v", line, tooLong, err)
	}
	if line, tooLong, err = lr.next(); string(line) != "last" || tooLong || !errors.Is(err, io.EOF) {
		t.Errorf("last line without newline: %q %v %v", line, tooLong, err)
	}
}

// FuzzStdioFrame feeds arbitrary lines to the frame check: it never
// panics, a line is either handed on as a message or answered with a
// JSON-RPC 2.0 error (-32700 only for what is not JSON), and only a blank
// line or a batch of notifications gets neither. The seed corpus is in
// testdata/fuzz/FuzzStdioFrame.
func FuzzStdioFrame(f *testing.F) {
	for _, tc := range badFrames {
		f.Add([]byte(tc.frame))
	}
	f.Add([]byte(`{"jsonrpc":"2.0","id":1,"method":"tools/list"}`))
	f.Fuzz(func(t *testing.T, line []byte) {
		msg, reply := checkFrame(line)
		trimmed := bytes.Trim(line, jsonSpace)
		switch {
		case msg != nil && reply != nil:
			t.Fatalf("both a message and an answer for %q", line)
		case msg != nil:
			if !json.Valid(trimmed) || trimmed[0] != '{' {
				t.Fatalf("handed on a message from %q", line)
			}
			data, err := jsonrpc.EncodeMessage(msg)
			if err != nil {
				t.Fatalf("message from %q does not encode: %v", line, err)
			}
			// A request the SDK re-encodes is accepted again (the SDK
			// drops an empty method and a null result when encoding).
			if req, ok := msg.(*jsonrpc.Request); !ok || req.Method == "" {
				return
			}
			if again, reply := checkFrame(data); again == nil || reply != nil {
				t.Fatalf("message from %q, encoded as %s, is refused: %s", line, data, reply)
			}
		case reply != nil:
			if !json.Valid(reply) || !utf8.Valid(reply) || bytes.ContainsRune(reply, '\n') {
				t.Fatalf("answer to %q is not one line of JSON: %q", line, reply)
			}
			var answers []wireAnswer
			if reply[0] == '[' {
				if err := json.Unmarshal(reply, &answers); err != nil || len(answers) == 0 || trimmed[0] != '[' {
					t.Fatalf("batch answer to %q: %s", line, reply)
				}
			} else {
				answers = []wireAnswer{decodeAnswer(t, reply)}
			}
			for _, a := range answers {
				if a.JSONRPC != "2.0" || a.Error == nil || a.Result != nil {
					t.Fatalf("answer to %q is not a JSON-RPC error: %s", line, reply)
				}
				switch a.Error.Code {
				case -32700:
					if json.Valid(trimmed) {
						t.Fatalf("parse error for valid JSON %q", line)
					}
				case -32600:
					if !json.Valid(trimmed) {
						t.Fatalf("invalid request for invalid JSON %q", line)
					}
				default:
					t.Fatalf("answer to %q has code %d", line, a.Error.Code)
				}
				if id := string(a.ID); id != "null" && id[0] != '"' && id[0] != '-' && (id[0] < '0' || id[0] > '9') {
					t.Fatalf("answer to %q has id %s", line, id)
				}
			}
		default:
			if len(trimmed) > 0 && trimmed[0] != '[' {
				t.Fatalf("no answer and no message for %q", line)
			}
		}
	})
}

// FuzzStdioLines checks the line reader against bytes.Split with a small
// limit: every line comes back whole or as too long, in order.
func FuzzStdioLines(f *testing.F) {
	f.Add([]byte("{}\n{not json\n\n[]"), uint8(4))
	f.Add([]byte(strings.Repeat("x", 100)+"\n{}\n"), uint8(8))
	f.Fuzz(func(t *testing.T, data []byte, max uint8) {
		limit := int(max) + 1
		lr := newLineReader(bytes.NewReader(data), limit)
		want := bytes.Split(data, []byte("\n"))
		for i, w := range want {
			last := i == len(want)-1
			if last && len(w) == 0 {
				break
			}
			line, tooLong, err := lr.next()
			if tooLong != (len(w) > limit) || (!tooLong && !bytes.Equal(line, w)) {
				t.Fatalf("line %d: got %q (too long %v), want %q (limit %d)", i, line, tooLong, w, limit)
			}
			if last != (err != nil) {
				t.Fatalf("line %d: error %v, last %v", i, err, last)
			}
		}
		if _, _, err := lr.next(); !errors.Is(err, io.EOF) {
			t.Fatalf("after the last line: %v", err)
		}
	})
}
