// Package search finds anything on the host by meaning: every introspected
// D-Bus object, interface, method, signal and property (with its value),
// every plugin state item and every audit log entry is a Document with a
// stable ID and the command that opens it. Ranking combines BM25 over
// D-Bus-aware terms (package token) with vector similarity from an
// embedder (package embed), whose vectors are cached by content hash in an
// mmap'd file (package cache) and searched in a VectorStore (package
// store). See docs/search.md.
package search

import (
	"strings"

	"github.com/op-dbus/op-dbus/internal/search/cache"
)

// Kinds of documents.
const (
	KindService   = "service"
	KindObject    = "object"
	KindInterface = "interface"
	KindMethod    = "method"
	KindSignal    = "signal"
	KindProperty  = "property"
	KindSetting   = "setting" // a plugin's scalar field (static_hostname, timezone)
	KindUnit      = "unit"    // a systemd unit of the systemd plugin
	KindAudit     = "audit"
	// Other plugin items take the singular of their collection: peer,
	// bridge, connection, object, ... ("netif" for network interfaces, so
	// they are not confused with D-Bus interfaces).
)

// Document is one searchable thing.
type Document struct {
	// ID is stable across builds while the thing exists:
	//   dbus/BUS/SERVICE                                      service
	//   dbus/BUS/SERVICE/PATH                                 object
	//   dbus/BUS/SERVICE/PATH#IFACE                           interface
	//   dbus/BUS/SERVICE/PATH#IFACE/method|signal|property/NAME
	//   state/PLUGIN/FIELD[/ITEM]                             plugin state
	//   audit/SEQ                                             audit entry
	ID   string `json:"id"`
	Kind string `json:"kind"`
	// Name is what the thing is called (a member name, a unit name).
	Name string `json:"name"`
	// Context is where it lives (interface, object, service, plugin).
	Context string `json:"context,omitempty"`
	// Text is everything else searchable: arguments, values, descriptions.
	Text string `json:"text,omitempty"`
	// Open is the op-dbus command that shows the source.
	Open string `json:"open"`
	// Source groups documents for incremental updates: "dbus/BUS/SERVICE",
	// "state/PLUGIN" or "audit".
	Source string `json:"source"`
}

// EmbedText is what the embedder sees: the name first and twice (it is
// what a question is mostly about), the kind, then the rest.
func (d *Document) EmbedText() string {
	var b strings.Builder
	b.Grow(len(d.Name)*2 + len(d.Kind) + len(d.Text) + len(d.Context) + 8)
	b.WriteString(d.Kind)
	b.WriteByte(' ')
	b.WriteString(d.Name)
	b.WriteByte(' ')
	b.WriteString(d.Name)
	b.WriteByte('\n')
	b.WriteString(d.Text)
	b.WriteByte('\n')
	b.WriteString(shortContext(d.Context))
	return b.String()
}

// shortContext keeps the last dotted or slashed component of each word of
// the context ("org.freedesktop.timedate1" → "timedate1"): the full names
// repeat on thousands of documents and would drown the vector in them.
func shortContext(c string) string {
	f := strings.Fields(c)
	for i, w := range f {
		w = strings.TrimRight(w, "./")
		if j := strings.LastIndexAny(w, "./"); j >= 0 && j+1 < len(w) {
			w = w[j+1:]
		}
		f[i] = w
	}
	return strings.Join(f, " ")
}

// Hash is the document's content hash: the cache key of its vector.
func (d *Document) Hash() uint64 { return cache.Key(d.EmbedText()) }
