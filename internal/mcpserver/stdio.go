package mcpserver

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"sync"
	"unicode/utf8"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// MaxFrameBytes is the longest line StdioTransport accepts: the bytes of one
// newline-delimited JSON-RPC message, not counting its newline. A longer line
// is never buffered whole: the reader skips to the next newline, answers it
// with a JSON-RPC -32600 error (id null) and serves the next line. 4 MiB is
// far above any request op-dbus takes (a state document is a few KiB) and
// bounds what one client can make the server hold.
const MaxFrameBytes = 4 << 20

// maxSafeID is the largest integer request id answered exactly: the SDK
// reads ids through float64, so a larger one would come back changed.
const maxSafeID = 1<<53 - 1

// StdioTransport serves MCP over newline-delimited JSON-RPC 2.0 on a reader
// and a writer, like the SDK's mcp.IOTransport, but a malformed frame does
// not end the session. The SDK's transport closes the connection (and `op-dbus
// mcp` exits 1) on the first line it cannot decode; this one checks every
// line before the SDK sees it and answers, per JSON-RPC 2.0:
//
//   - a line that is not one JSON value: -32700 parse error, id null;
//   - valid JSON that is not a valid message (not an object, "jsonrpc" not
//     "2.0", an id that is null, fractional, beyond ±(2^53-1) or not a string
//     or number, "method" not a string, a response without an id or with
//     neither or both of result and error): -32600 invalid request, with the
//     message's id when it could be read, else null;
//   - an empty batch `[]`: -32600, id null;
//   - a non-empty batch: MCP 2025-06-18 removed JSON-RPC batching and the
//     SDK's batch support ends the session on a bad batch, so batches are
//     refused: an array holding one -32600 per request in it (with its id)
//     and per invalid element (id null); notifications and responses in it
//     are dropped, and a batch of only those gets no answer;
//   - a line longer than MaxFrameBytes: -32600, id null (see MaxFrameBytes);
//   - a blank line: ignored.
//
// It then keeps reading. Error answers and the SDK's own messages are
// written through one mutex, one Write per line, so frames never interleave.
type StdioTransport struct {
	Reader io.ReadCloser
	Writer io.WriteCloser
	// MaxFrameBytes overrides the package's MaxFrameBytes when positive.
	MaxFrameBytes int
}

// Connect implements mcp.Transport. It starts the goroutine that reads
// lines; Close ends it (or the end of the input does).
func (t *StdioTransport) Connect(context.Context) (mcp.Connection, error) {
	limit := t.MaxFrameBytes
	if limit <= 0 {
		limit = MaxFrameBytes
	}
	c := &stdioConn{
		r:        t.Reader,
		w:        t.Writer,
		incoming: make(chan jsonrpc.Message),
		readDone: make(chan struct{}),
		closed:   make(chan struct{}),
	}
	go c.readLoop(newLineReader(t.Reader, limit))
	return c, nil
}

// stdioConn is the mcp.Connection of a StdioTransport.
type stdioConn struct {
	r io.ReadCloser
	w io.WriteCloser

	writeMu sync.Mutex // one frame at a time on w

	incoming chan jsonrpc.Message // valid messages, in input order
	readDone chan struct{}        // closed when readLoop ended; readErr is set
	readErr  error

	closeOnce sync.Once
	closed    chan struct{}
	closeErr  error
}

// readLoop reads lines until the input ends or the connection is closed,
// answers the bad ones and hands the good ones to Read.
func (c *stdioConn) readLoop(lr *lineReader) {
	defer close(c.readDone)
	for {
		line, tooLong, err := lr.next()
		var (
			msg   jsonrpc.Message
			reply []byte
		)
		switch {
		case tooLong:
			reply = errorFrame(nil, jsonrpc.CodeInvalidRequest,
				fmt.Sprintf("invalid request: message longer than %d bytes (discarded)", lr.max))
		case len(line) > 0:
			msg, reply = checkFrame(line)
		}
		if reply != nil {
			if werr := c.writeLine(reply); werr != nil {
				c.readErr = werr
				return
			}
		}
		if msg != nil {
			select {
			case c.incoming <- msg:
			case <-c.closed:
				c.readErr = io.EOF
				return
			}
		}
		if err != nil {
			c.readErr = err
			return
		}
	}
}

// Read implements mcp.Connection.
func (c *stdioConn) Read(ctx context.Context) (jsonrpc.Message, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	select {
	case <-ctx.Done():
		return nil, ctx.Err()
	case msg := <-c.incoming:
		return msg, nil
	case <-c.readDone:
		return nil, c.readErr
	case <-c.closed:
		return nil, io.EOF
	}
}

// Write implements mcp.Connection.
func (c *stdioConn) Write(ctx context.Context, msg jsonrpc.Message) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	data, err := jsonrpc.EncodeMessage(msg)
	if err != nil {
		return fmt.Errorf("mcp stdio: encoding a message: %w", err)
	}
	return c.writeLine(data)
}

// writeLine writes data and a newline in one Write, under writeMu.
func (c *stdioConn) writeLine(data []byte) error {
	select {
	case <-c.closed:
		return mcp.ErrConnectionClosed
	default:
	}
	frame := make([]byte, 0, len(data)+1)
	frame = append(append(frame, data...), '\n')
	c.writeMu.Lock()
	defer c.writeMu.Unlock()
	_, err := c.w.Write(frame)
	return err
}

// Close implements mcp.Connection; it may be called more than once.
func (c *stdioConn) Close() error {
	c.closeOnce.Do(func() {
		close(c.closed)
		c.closeErr = errors.Join(c.r.Close(), c.w.Close())
	})
	return c.closeErr
}

// SessionID implements mcp.Connection: stdio has one session and no id.
func (c *stdioConn) SessionID() string { return "" }

// lineReader splits its input at '\n' and never holds more than max bytes
// of one line: the rest of a longer line is read and dropped.
type lineReader struct {
	br  *bufio.Reader
	max int
}

func newLineReader(r io.Reader, max int) *lineReader {
	return &lineReader{br: bufio.NewReaderSize(r, 64<<10), max: max}
}

// next returns the next line without its '\n', or tooLong (and no bytes)
// when it had more than max bytes. err is the input's error (io.EOF at its
// end) after the last line, which may come with it when the input did not
// end with a newline.
func (l *lineReader) next() (line []byte, tooLong bool, err error) {
	for {
		chunk, err := l.br.ReadSlice('\n')
		if err == nil {
			chunk = chunk[:len(chunk)-1]
		}
		if !tooLong {
			if len(line)+len(chunk) > l.max {
				tooLong, line = true, nil
			} else {
				line = append(line, chunk...)
			}
		}
		if err == bufio.ErrBufferFull {
			continue
		}
		if err != nil && tooLong {
			// The over-long line still gets its answer before err.
			return nil, true, err
		}
		return line, tooLong, err
	}
}

// jsonSpace is the whitespace JSON allows around a value.
const jsonSpace = " \t\r\n"

// checkFrame checks one line. It returns the message to hand to the SDK, or
// the error answer to write (a JSON object or array without newline), or
// neither for a blank line and a batch that needs no answer.
func checkFrame(line []byte) (jsonrpc.Message, []byte) {
	line = bytes.Trim(line, jsonSpace)
	if len(line) == 0 {
		return nil, nil
	}
	if !json.Valid(line) {
		return nil, errorFrame(nil, jsonrpc.CodeParseError, "parse error: "+syntaxError(line))
	}
	switch line[0] {
	case '[':
		return nil, batchReply(line)
	case '{':
	default:
		return nil, errorFrame(nil, jsonrpc.CodeInvalidRequest, "invalid request: a JSON-RPC message is a JSON object")
	}
	msg, id, why := checkMessage(line)
	if why != "" {
		return nil, errorFrame(id, jsonrpc.CodeInvalidRequest, "invalid request: "+why)
	}
	return msg, nil
}

// syntaxError says why line, which json.Valid refused, is not JSON.
func syntaxError(line []byte) string {
	var v any
	if err := json.Unmarshal(line, &v); err != nil {
		return err.Error()
	}
	return "not one JSON value"
}

// checkMessage decodes a JSON object as one JSON-RPC 2.0 message. When it
// is not valid, why says what is wrong and id is its id when one could be
// read (nil for null).
func checkMessage(obj []byte) (msg jsonrpc.Message, id json.RawMessage, why string) {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(obj, &m); err != nil {
		return nil, nil, err.Error()
	}
	rawID, hasID := m["id"]
	if hasID {
		if id, why = checkID(rawID); why != "" {
			return nil, id, why
		}
	}
	var version string
	if v, ok := m["jsonrpc"]; !ok {
		return nil, id, `"jsonrpc" is missing: it must be "2.0"`
	} else if json.Unmarshal(v, &version) != nil || version != "2.0" {
		return nil, id, fmt.Sprintf(`"jsonrpc" is %s: it must be "2.0"`, abbreviate(v))
	}
	if method, ok := m["method"]; ok {
		var s string
		if json.Unmarshal(method, &s) != nil {
			return nil, id, `"method" must be a string`
		}
	} else {
		if !hasID {
			return nil, nil, `neither "method" (a request) nor "id" (a response)`
		}
		_, hasResult := m["result"]
		_, hasError := m["error"]
		if hasResult == hasError {
			return nil, id, `a response has exactly one of "result" and "error"`
		}
	}
	msg, err := jsonrpc.DecodeMessage(obj)
	if err != nil {
		return nil, id, err.Error()
	}
	return msg, id, ""
}

// checkID accepts what MCP allows as a request id: a string, or an integer
// the SDK keeps exact. id is raw when it can be echoed in an answer.
func checkID(raw json.RawMessage) (id json.RawMessage, why string) {
	switch raw[0] {
	case '"':
		if !utf8.Valid(raw) {
			// Echo it as valid UTF-8, as the SDK would.
			var s string
			_ = json.Unmarshal(raw, &s)
			raw, _ = json.Marshal(s)
		}
		return raw, ""
	case 'n':
		return nil, `"id" is null: MCP request ids are strings or integers`
	case '-', '0', '1', '2', '3', '4', '5', '6', '7', '8', '9':
		n, err := strconv.ParseInt(string(raw), 10, 64)
		if err != nil || n > maxSafeID || n < -maxSafeID {
			return raw, fmt.Sprintf(`"id" %s is not an integer within ±%d`, abbreviate(raw), int64(maxSafeID))
		}
		return raw, ""
	}
	return nil, `"id" must be a string or an integer`
}

// batchReply answers a JSON array (see StdioTransport).
func batchReply(line []byte) []byte {
	var elems []json.RawMessage
	if err := json.Unmarshal(line, &elems); err != nil {
		return errorFrame(nil, jsonrpc.CodeInvalidRequest, "invalid request: "+err.Error())
	}
	if len(elems) == 0 {
		return errorFrame(nil, jsonrpc.CodeInvalidRequest, "invalid request: empty batch")
	}
	const notSupported = "invalid request: JSON-RPC batches are not supported (MCP 2025-06-18 removed them): send one message per line"
	var replies []errorResponse
	for _, e := range elems {
		if len(e) == 0 || e[0] != '{' {
			replies = append(replies, newErrorResponse(nil, jsonrpc.CodeInvalidRequest, notSupported))
			continue
		}
		msg, id, why := checkMessage(e)
		switch {
		case why != "":
			replies = append(replies, newErrorResponse(id, jsonrpc.CodeInvalidRequest, notSupported+"; and this element: "+why))
		case isCall(msg):
			replies = append(replies, newErrorResponse(id, jsonrpc.CodeInvalidRequest, notSupported))
		}
	}
	if len(replies) == 0 {
		return nil
	}
	b, err := json.Marshal(replies)
	if err != nil {
		return errorFrame(nil, jsonrpc.CodeInvalidRequest, notSupported)
	}
	return b
}

func isCall(msg jsonrpc.Message) bool {
	req, ok := msg.(*jsonrpc.Request)
	return ok && req.IsCall()
}

// errorResponse is a JSON-RPC 2.0 error response; a nil ID is null.
type errorResponse struct {
	JSONRPC string          `json:"jsonrpc"`
	ID      json.RawMessage `json:"id"`
	Error   jsonrpc.Error   `json:"error"`
}

func newErrorResponse(id json.RawMessage, code int64, message string) errorResponse {
	return errorResponse{JSONRPC: "2.0", ID: id, Error: jsonrpc.Error{Code: code, Message: message}}
}

// errorFrame is one error response, encoded.
func errorFrame(id json.RawMessage, code int64, message string) []byte {
	b, err := json.Marshal(newErrorResponse(id, code, message))
	if err != nil {
		// Only an id could fail to encode, and ids here are valid JSON.
		b, _ = json.Marshal(newErrorResponse(nil, code, message))
	}
	return b
}

// abbreviate quotes at most 64 bytes of a JSON value for an error message.
func abbreviate(raw json.RawMessage) string {
	const max = 64
	if len(raw) <= max {
		return string(raw)
	}
	return string(raw[:max]) + "…"
}
