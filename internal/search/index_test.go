package search

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/op-dbus/op-dbus/internal/ledger"
	"github.com/op-dbus/op-dbus/internal/search/cache"
	"github.com/op-dbus/op-dbus/internal/search/embed"
)

func synthetic(n int, src string) []Document {
	docs := make([]Document, n)
	for i := range docs {
		docs[i] = Document{ID: fmt.Sprintf("%s/%d", src, i), Kind: KindProperty, Name: fmt.Sprintf("Prop%dValue", i),
			Text: fmt.Sprintf("property number %d of group %d", i, i%17), Open: "op-dbus x", Source: src}
	}
	return docs
}

// TestUpdateEmbedsOnlyChanged counts embedder calls: an update with one
// changed document embeds one text; a reload from the cache embeds none.
func TestUpdateEmbedsOnlyChanged(t *testing.T) {
	ctx := context.Background()
	p := filepath.Join(t.TempDir(), VectorFile)
	emb := &embed.Counting{Embedder: embed.NewBuiltin(64)}
	c, _ := cache.Open(p, 64, emb.ID(), 0)
	ix := New(emb, c, nil)
	docs := synthetic(500, "s")
	ch, err := ix.ReplaceSource(ctx, "s", docs, nil)
	if err != nil || ch.Embedded != 500 || emb.Texts != 500 {
		t.Fatalf("build: %+v %v (%d texts)", ch, err, emb.Texts)
	}
	docs[7].Text = "changed text"
	docs = append(docs[:100], docs[101:]...) // one removed
	ch, err = ix.ReplaceSource(ctx, "s", docs, nil)
	if err != nil || ch.Embedded != 1 || ch.Changed != 1 || ch.Removed != 1 || ch.Same != 498 || emb.Texts != 501 {
		t.Fatalf("update: %+v %v (%d texts)", ch, err, emb.Texts)
	}
	if err := c.Save(); err != nil {
		t.Fatal(err)
	}
	c.Close()
	// a new process: every vector comes from the mmap'd cache
	emb2 := &embed.Counting{Embedder: embed.NewBuiltin(64)}
	c2, _ := cache.Open(p, 64, emb2.ID(), 0)
	defer c2.Close()
	ix2 := New(emb2, c2, nil)
	ch, err = ix2.ReplaceSource(ctx, "s", docs, nil)
	if err != nil || emb2.Texts != 0 || ch.Cached != 499 {
		t.Fatalf("reload: %+v %v (%d texts)", ch, err, emb2.Texts)
	}
	rs, err := ix2.Search(ctx, Query{Text: "changed text", K: 1})
	if err != nil || len(rs) != 1 || rs[0].Doc.ID != "s/7" {
		t.Fatalf("search %+v %v", rs, err)
	}
}

func TestDaemonAPI(t *testing.T) {
	ctx := context.Background()
	ix := New(embed.NewBuiltin(0), nil, nil)
	st := map[string]any{"units": map[string]any{"nginx.service": map[string]any{"active_state": "failed"}}, "password": "hunter2",
		"peers": []any{map[string]any{"public_key": "PUB", "preshared_key": "SECRETPSK", "endpoint": "10.0.0.1:51820"}}}
	if _, err := ix.UpdatePlugin(ctx, "demo", st, ""); err != nil {
		t.Fatal(err)
	}
	if _, err := ix.UpdateAudit(ctx, []ledger.Entry{{Seq: 0, Kind: "apply", Result: "failed", Message: "token=abc123secret"}}, ""); err != nil {
		t.Fatal(err)
	}
	for _, d := range ix.Documents() {
		for _, secret := range []string{"hunter2", "SECRETPSK", "abc123secret"} {
			if strings.Contains(d.Text+d.Name+d.Context, secret) {
				t.Errorf("secret %q indexed in %s: %s", secret, d.ID, d.Text)
			}
		}
	}
	rs, err := ix.Search(ctx, Query{Text: "nginx failed", Kinds: []string{KindUnit}})
	if err != nil || len(rs) != 1 || rs[0].Doc.ID != "state/demo/units/nginx.service" || rs[0].Doc.Open != "op-dbus query -p demo" {
		t.Fatalf("%+v %v", rs, err)
	}
	// the plugin's next state drops the unit
	ch, _ := ix.UpdatePlugin(ctx, "demo", map[string]any{"units": map[string]any{}}, "")
	if ch.Removed == 0 {
		t.Fatalf("%+v", ch)
	}
}

func TestBadQueries(t *testing.T) {
	ix := New(embed.NewBuiltin(0), nil, nil)
	_, _ = ix.ReplaceSource(context.Background(), "s", synthetic(10, "s"), nil)
	for q, want := range map[string]error{
		"":                         ErrEmptyQuery,
		" \t ":                     ErrEmptyQuery,
		"the of":                   ErrEmptyQuery,
		"?!":                       ErrEmptyQuery,
		strings.Repeat("a", 1<<20): ErrQueryLong,
		"bad \xc3\x28 utf8":        ErrQueryUTF8,
	} {
		if _, err := ix.Search(context.Background(), Query{Text: q}); !errors.Is(err, want) {
			t.Errorf("%.20q: %v, want %v", q, err, want)
		}
	}
	if _, err := ix.Search(context.Background(), Query{Text: "x", Ranking: "best"}); err == nil {
		t.Error("unknown ranking accepted")
	}
}

func TestIndexFileRoundTripAndDamage(t *testing.T) {
	docs := synthetic(50, "s")
	var buf bytes.Buffer
	if err := EncodeIndex(&buf, Meta{Version: FormatVersion, Embedder: "e"}, docs); err != nil {
		t.Fatal(err)
	}
	m, got, err := DecodeIndex(buf.Bytes())
	if err != nil || m.Embedder != "e" || len(got) != 50 || got[49] != docs[49] {
		t.Fatalf("%v %+v", err, m)
	}
	b := append([]byte(nil), buf.Bytes()...)
	b[len(b)-1] ^= 1
	if _, _, err := DecodeIndex(b); !errors.Is(err, ErrCorrupt) {
		t.Errorf("flipped byte: %v", err)
	}
	b = append([]byte(nil), buf.Bytes()...)
	b[8] = 0
	if _, _, err := DecodeIndex(b); !errors.Is(err, ErrOldFormat) {
		t.Errorf("old version: %v", err)
	}
	if _, _, err := DecodeIndex(buf.Bytes()[:buf.Len()-5]); !errors.Is(err, ErrCorrupt) {
		t.Errorf("truncated: %v", err)
	}
}

func FuzzDecodeIndex(f *testing.F) {
	var buf bytes.Buffer
	_ = EncodeIndex(&buf, Meta{Version: FormatVersion}, synthetic(3, "s"))
	f.Add(buf.Bytes())
	f.Add([]byte(indexMagic))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		_, docs, err := DecodeIndex(data)
		if err == nil && docs == nil && len(data) > 0 {
			// an index of zero documents is valid; nothing else to check
			return
		}
	})
}

func FuzzQuery(f *testing.F) {
	ix := New(embed.NewBuiltin(32), nil, nil)
	_, _ = ix.ReplaceSource(context.Background(), "s", synthetic(20, "s"), nil)
	for _, s := range []string{"set the time zone", "", "\xff", "a_2e_2d", "Prop1Value"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, q string) {
		rs, err := ix.Search(context.Background(), Query{Text: q, K: 3})
		if err == nil && len(rs) > 3 {
			t.Fatalf("%d results", len(rs))
		}
	})
}
