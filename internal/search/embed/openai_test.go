package embed

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// server is an OpenAI-compatible /v1/embeddings peer of our own: it embeds
// with the built-in embedder at dim, or misbehaves as told.
func server(t *testing.T, dim int, behave func(n int64, w http.ResponseWriter, r *http.Request) bool) (*httptest.Server, *atomic.Int64, *atomic.Int64) {
	t.Helper()
	var calls, texts atomic.Int64
	b := NewBuiltin(dim)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := calls.Add(1)
		if r.URL.Path != "/v1/embeddings" || r.Method != http.MethodPost {
			http.Error(w, "not found", 404)
			return
		}
		if behave != nil && behave(n, w, r) {
			return
		}
		var req embedRequest
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
			http.Error(w, err.Error(), 400)
			return
		}
		texts.Add(int64(len(req.Input)))
		type item struct {
			Index     int       `json:"index"`
			Embedding []float32 `json:"embedding"`
		}
		var resp struct {
			Data []item `json:"data"`
		}
		for i, s := range req.Input {
			resp.Data = append(resp.Data, item{i, b.Vector(s)})
		}
		_ = json.NewEncoder(w).Encode(resp)
	}))
	t.Cleanup(srv.Close)
	return srv, &calls, &texts
}

func TestHTTPBatchesAndMatchesBuiltin(t *testing.T) {
	srv, calls, texts := server(t, 32, nil)
	h := NewHTTP(srv.URL, "m", 0)
	h.Batch = 10
	in := make([]string, 25)
	for i := range in {
		in[i] = strings.Repeat("SetTimezone ", i+1)
	}
	vs, err := h.Embed(context.Background(), in)
	if err != nil {
		t.Fatal(err)
	}
	if calls.Load() != 3 || texts.Load() != 25 || h.Dim() != 32 {
		t.Fatalf("calls %d texts %d dim %d", calls.Load(), texts.Load(), h.Dim())
	}
	want := NewBuiltin(32).Vector(in[4])
	for i := range want {
		if d := vs[4][i] - want[i]; d > 1e-5 || d < -1e-5 {
			t.Fatalf("vector 4 differs at %d", i)
		}
	}
}

func TestHTTPRetriesServerErrors(t *testing.T) {
	srv, calls, _ := server(t, 8, func(n int64, w http.ResponseWriter, _ *http.Request) bool {
		if n <= 2 {
			http.Error(w, `{"error":{"message":"overloaded"}}`, 503)
			return true
		}
		return false
	})
	h := NewHTTP(srv.URL, "m", 8)
	h.Backoff = time.Millisecond
	if _, err := h.Embed(context.Background(), []string{"a"}); err != nil {
		t.Fatal(err)
	}
	if calls.Load() != 3 {
		t.Fatalf("%d calls, want 3 (two retries)", calls.Load())
	}
}

func TestHTTPHangTimesOut(t *testing.T) {
	release := make(chan struct{})
	srv, calls, _ := server(t, 8, func(_ int64, _ http.ResponseWriter, r *http.Request) bool {
		select {
		case <-release:
		case <-r.Context().Done():
		}
		return true
	})
	defer close(release)
	h := NewHTTP(srv.URL, "m", 8)
	h.Timeout = 50 * time.Millisecond
	h.Backoff = time.Millisecond
	h.Retries = 1
	_, err := h.Embed(context.Background(), []string{"a"})
	if err == nil || !strings.Contains(err.Error(), "no answer within 50ms") || !strings.Contains(err.Error(), "gave up after 2 attempts") {
		t.Fatalf("err %v", err)
	}
	if calls.Load() != 2 {
		t.Fatalf("%d calls", calls.Load())
	}
}

func TestHTTPWrongDimensionAndGarbage(t *testing.T) {
	srv, _, _ := server(t, 16, nil)
	h := NewHTTP(srv.URL, "m", 8) // the index was built with 8
	_, err := h.Embed(context.Background(), []string{"a"})
	if !errors.Is(err, ErrDimension) || !strings.Contains(err.Error(), "dimension 16, expected 8") {
		t.Fatalf("err %v", err)
	}
	for name, body := range map[string]string{
		"not json":    "<html>",
		"too few":     `{"data":[]}`,
		"nan":         `{"data":[{"index":0,"embedding":[1e999]}]}`,
		"bad index":   `{"data":[{"index":5,"embedding":[1]}]}`,
		"client side": "",
	} {
		srv, _, _ := server(t, 1, func(_ int64, w http.ResponseWriter, _ *http.Request) bool {
			if name == "client side" {
				http.Error(w, "bad model", 400)
				return true
			}
			_, _ = w.Write([]byte(body))
			return true
		})
		h := NewHTTP(srv.URL, "m", 1)
		h.Backoff = time.Millisecond
		if _, err := h.Embed(context.Background(), []string{"a"}); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}
