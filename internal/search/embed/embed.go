// Package embed turns texts into vectors for op-dbus search. An Embedder is
// either the built-in one (deterministic, no downloaded weights: hashed
// words, word pieces and a small D-Bus/systemd synonym table) or an
// OpenAI-compatible HTTP endpoint (POST /v1/embeddings, as Ollama, vLLM,
// llama.cpp's server and OpenAI offer).
package embed

import (
	"context"
	"errors"
	"fmt"
	"math"
)

// Embedder maps texts to vectors of Dim() floats, L2-normalised.
type Embedder interface {
	// ID names the embedder and everything that changes its vectors
	// (model, dimension, version). Cached vectors are valid only for the
	// same ID.
	ID() string
	// Dim is the vector length. An HTTP embedder whose dimension was not
	// configured learns it from its first answer; Dim is 0 until then.
	Dim() int
	// Embed returns one vector per text, in order.
	Embed(ctx context.Context, texts []string) ([][]float32, error)
}

// ErrDimension is wrapped by errors about vectors of the wrong length.
var ErrDimension = errors.New("wrong vector dimension")

// Normalize scales v to unit length in place; a zero vector stays zero.
func Normalize(v []float32) {
	var s float64
	for _, x := range v {
		s += float64(x) * float64(x)
	}
	if s == 0 {
		return
	}
	inv := float32(1 / math.Sqrt(s))
	for i := range v {
		v[i] *= inv
	}
}

// Dot is the inner product of two vectors of equal length; for unit
// vectors it is their cosine similarity.
func Dot(a, b []float32) float32 {
	if len(a) != len(b) {
		panic(fmt.Sprintf("embed.Dot: lengths %d and %d", len(a), len(b)))
	}
	b = b[:len(a)]
	var s0, s1, s2, s3 float32
	i := 0
	for ; i+8 <= len(a); i += 8 {
		aa, bb := a[i:i+8:i+8], b[i:i+8:i+8]
		s0 += aa[0]*bb[0] + aa[4]*bb[4]
		s1 += aa[1]*bb[1] + aa[5]*bb[5]
		s2 += aa[2]*bb[2] + aa[6]*bb[6]
		s3 += aa[3]*bb[3] + aa[7]*bb[7]
	}
	for ; i < len(a); i++ {
		s0 += a[i] * b[i]
	}
	return s0 + s1 + s2 + s3
}

// Counting wraps an Embedder and counts the texts it embeds (tests and
// `index update` use it to show what was re-embedded).
type Counting struct {
	Embedder
	Texts int
	Calls int
}

// Embed counts and forwards.
func (c *Counting) Embed(ctx context.Context, texts []string) ([][]float32, error) {
	c.Calls++
	c.Texts += len(texts)
	return c.Embedder.Embed(ctx, texts)
}
