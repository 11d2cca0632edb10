package embed

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"strings"
	"time"
)

// HTTP calls an OpenAI-compatible embeddings endpoint:
//
//	POST {BaseURL}/v1/embeddings
//	{"model": Model, "input": ["text", ...]}
//	→ {"data": [{"index": 0, "embedding": [0.1, ...]}, ...]}
//
// Texts are sent in batches of Batch; a batch that fails with a network
// error, a 429 or a 5xx is retried (Retries times, with doubling back-off);
// each attempt is bounded by Timeout. Every vector must have the dimension
// the embedder was configured with or learned from its first answer, and
// contain only finite numbers; otherwise Embed fails with an error naming
// both (never a wrong vector served as right).
type HTTP struct {
	BaseURL string // e.g. http://127.0.0.1:11434 (Ollama)
	Model   string // e.g. nomic-embed-text
	// APIKey, when set, is sent as "Authorization: Bearer KEY". It is never
	// stored in the index.
	APIKey  string
	Batch   int           // texts per request (default 64)
	Retries int           // retries of a failed batch (default 2)
	Timeout time.Duration // per attempt (default 30s)
	Backoff time.Duration // first retry delay (default 200ms)
	Client  *http.Client

	dim int
}

// NewHTTP returns an HTTP embedder. dim may be 0: it is learned from the
// first answer and fixed from then on.
func NewHTTP(baseURL, model string, dim int) *HTTP {
	return &HTTP{BaseURL: strings.TrimRight(baseURL, "/"), Model: model, dim: dim}
}

// ID implements Embedder.
func (h *HTTP) ID() string { return fmt.Sprintf("openai/%s/%s/%d", h.BaseURL, h.Model, h.dim) }

// Dim implements Embedder.
func (h *HTTP) Dim() int { return h.dim }

// MaxResponse bounds one answer's body.
const MaxResponse = 256 << 20

type embedRequest struct {
	Model string   `json:"model"`
	Input []string `json:"input"`
}

type embedResponse struct {
	Data []struct {
		Index     int       `json:"index"`
		Embedding []float64 `json:"embedding"`
	} `json:"data"`
	Error *struct {
		Message string `json:"message"`
	} `json:"error,omitempty"`
}

// Embed implements Embedder.
func (h *HTTP) Embed(ctx context.Context, texts []string) ([][]float32, error) {
	batch := h.Batch
	if batch <= 0 {
		batch = 64
	}
	out := make([][]float32, 0, len(texts))
	for i := 0; i < len(texts); i += batch {
		j := min(i+batch, len(texts))
		vs, err := h.batch(ctx, texts[i:j])
		if err != nil {
			return nil, err
		}
		out = append(out, vs...)
	}
	return out, nil
}

// retryable marks errors worth another attempt.
type retryable struct{ error }

func (h *HTTP) batch(ctx context.Context, texts []string) ([][]float32, error) {
	retries := h.Retries
	if retries < 0 {
		retries = 0
	} else if retries == 0 {
		retries = 2
	}
	backoff := h.Backoff
	if backoff <= 0 {
		backoff = 200 * time.Millisecond
	}
	var last error
	for attempt := 0; attempt <= retries; attempt++ {
		if attempt > 0 {
			select {
			case <-time.After(backoff):
			case <-ctx.Done():
				return nil, ctx.Err()
			}
			backoff *= 2
		}
		vs, err := h.once(ctx, texts)
		if err == nil {
			return vs, nil
		}
		last = err
		var r retryable
		if !errors.As(err, &r) || ctx.Err() != nil {
			return nil, err
		}
	}
	return nil, fmt.Errorf("%w (gave up after %d attempts)", last, retries+1)
}

func (h *HTTP) once(ctx context.Context, texts []string) ([][]float32, error) {
	timeout := h.Timeout
	if timeout <= 0 {
		timeout = 30 * time.Second
	}
	cctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	body, _ := json.Marshal(embedRequest{Model: h.Model, Input: texts})
	url := h.BaseURL + "/v1/embeddings"
	req, err := http.NewRequestWithContext(cctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("embedder %s: %w", url, err)
	}
	req.Header.Set("Content-Type", "application/json")
	if h.APIKey != "" {
		req.Header.Set("Authorization", "Bearer "+h.APIKey)
	}
	c := h.Client
	if c == nil {
		c = http.DefaultClient
	}
	resp, err := c.Do(req)
	if err != nil {
		if cctx.Err() != nil && ctx.Err() == nil {
			return nil, retryable{fmt.Errorf("embedder %s: no answer within %s", url, timeout)}
		}
		return nil, retryable{fmt.Errorf("embedder %s: %w", url, err)}
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, MaxResponse+1))
	if err != nil {
		if cctx.Err() != nil && ctx.Err() == nil {
			return nil, retryable{fmt.Errorf("embedder %s: answer not complete within %s", url, timeout)}
		}
		return nil, retryable{fmt.Errorf("embedder %s: reading the answer: %w", url, err)}
	}
	if len(data) > MaxResponse {
		return nil, fmt.Errorf("embedder %s: answer over %d MiB", url, MaxResponse>>20)
	}
	var r embedResponse
	jerr := json.Unmarshal(data, &r)
	if resp.StatusCode != http.StatusOK {
		msg := strings.TrimSpace(string(data))
		if jerr == nil && r.Error != nil {
			msg = r.Error.Message
		}
		if len(msg) > 200 {
			msg = msg[:200] + "..."
		}
		err := fmt.Errorf("embedder %s: HTTP %d: %s", url, resp.StatusCode, msg)
		if resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode >= 500 {
			return nil, retryable{err}
		}
		return nil, err
	}
	if jerr != nil {
		return nil, fmt.Errorf("embedder %s: answer is not an embeddings response: %v", url, jerr)
	}
	if len(r.Data) != len(texts) {
		return nil, fmt.Errorf("embedder %s: %d vectors for %d texts", url, len(r.Data), len(texts))
	}
	out := make([][]float32, len(texts))
	for k, d := range r.Data {
		i := d.Index
		if len(r.Data) > 0 && i == 0 && k > 0 {
			i = k // some servers omit index
		}
		if i < 0 || i >= len(texts) || out[i] != nil {
			return nil, fmt.Errorf("embedder %s: bad or repeated index %d", url, d.Index)
		}
		if h.dim == 0 {
			if len(d.Embedding) == 0 {
				return nil, fmt.Errorf("embedder %s: empty vector", url)
			}
			h.dim = len(d.Embedding)
		}
		if len(d.Embedding) != h.dim {
			return nil, fmt.Errorf("embedder %s: vector of dimension %d, expected %d: %w (is the model %q the one the index was built with?)",
				url, len(d.Embedding), h.dim, ErrDimension, h.Model)
		}
		v := make([]float32, h.dim)
		for j, x := range d.Embedding {
			if math.IsNaN(x) || math.IsInf(x, 0) {
				return nil, fmt.Errorf("embedder %s: vector %d has a non-finite value", url, i)
			}
			v[j] = float32(x)
		}
		Normalize(v)
		out[i] = v
	}
	return out, nil
}
