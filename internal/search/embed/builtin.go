package embed

import (
	"context"
	"fmt"
	"math"
	"runtime"
	"slices"
	"strings"
	"sync"

	"github.com/cespare/xxhash/v2"

	"github.com/op-dbus/op-dbus/internal/search/token"
)

// BuiltinVersion changes whenever the built-in embedder's vectors change;
// it is part of ID, so cached vectors of an older version are not reused.
const BuiltinVersion = 2

// DefaultDim is the built-in embedder's vector length.
const DefaultDim = 256

// Builtin is a deterministic embedder that needs no model weights. A text's
// vector is the sum of hashed features, signed by a second hash bit
// (feature hashing), then L2-normalised:
//
//   - every search term (see package token: CamelCase, dots, underscores,
//     systemd path escapes, a light stemmer), weight 1 + ln(count);
//   - the terms' character trigrams ("^ti", "tim", "ime", ..., "ne$"), so
//     "hostname" and "host name", "timezone" and "timezones" land near
//     each other;
//   - a concept for terms in a small D-Bus/systemd synonym table
//     (shutdown ~ poweroff, tz ~ timezone, ntp ~ network time ~ sync).
//
// It does not understand meaning beyond that: no word order, no negation,
// no synonyms outside its table, no other languages, no time expressions
// ("yesterday"). Two texts are near when they share words, word pieces or
// listed synonyms.
type Builtin struct {
	dim int
}

// NewBuiltin returns the built-in embedder with dim dimensions (DefaultDim
// when dim <= 0).
func NewBuiltin(dim int) *Builtin {
	if dim <= 0 {
		dim = DefaultDim
	}
	return &Builtin{dim: dim}
}

// ID implements Embedder.
func (b *Builtin) ID() string { return fmt.Sprintf("builtin/v%d/%d", BuiltinVersion, b.dim) }

// Dim implements Embedder.
func (b *Builtin) Dim() int { return b.dim }

// Embed implements Embedder. It never fails except on a cancelled context.
func (b *Builtin) Embed(ctx context.Context, texts []string) ([][]float32, error) {
	out := make([][]float32, len(texts))
	workers := runtime.GOMAXPROCS(0)
	if len(texts) < 64 {
		workers = 1
	}
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := w; i < len(texts); i += workers {
				if i%256 == w && ctx.Err() != nil {
					return
				}
				out[i] = b.Vector(texts[i])
			}
		}(w)
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return out, nil
}

// Vector embeds one text.
func (b *Builtin) Vector(text string) []float32 {
	v := make([]float32, b.dim)
	b.add(v, token.Tokens(text))
	Normalize(v)
	return v
}

// VectorTerms embeds already tokenized terms (a query adds its compounds).
func (b *Builtin) VectorTerms(terms []string) []float32 {
	v := make([]float32, b.dim)
	b.add(v, terms)
	Normalize(v)
	return v
}

const (
	gramWeight    = 0.35
	conceptWeight = 0.8
)

func (b *Builtin) add(v []float32, terms []string) {
	counts := make(map[string]int, len(terms))
	order := make([]string, 0, len(terms))
	for _, t := range terms {
		if counts[t] == 0 {
			order = append(order, t)
		}
		counts[t]++
	}
	for _, t := range order {
		w := float32(1 + math.Log(float64(counts[t])))
		b.feature(v, "w:"+t, w)
		for _, c := range concepts[t] {
			b.feature(v, "c:"+c, conceptWeight*w)
		}
		// trigrams of ^term$, sharing one unit of weight between them
		g := "^" + t + "$"
		n := len(g) - 2
		if n <= 1 || len(t) <= 2 {
			continue
		}
		gw := gramWeight * w / float32(math.Sqrt(float64(n)))
		for i := 0; i+3 <= len(g); i++ {
			b.feature(v, "g:"+g[i:i+3], gw)
		}
	}
}

func (b *Builtin) feature(v []float32, f string, w float32) {
	h := xxhash.Sum64String(f)
	i := int(h % uint64(b.dim))
	if h>>63 == 1 {
		w = -w
	}
	v[i] += w
}

// Synonyms returns the other terms of t's concepts in the synonym table
// (normalised, in table order), for query expansion; nil when t has none.
func Synonyms(t string) []string {
	var out []string
	seen := map[string]bool{t: true}
	for _, c := range concepts[t] {
		for _, o := range conceptTerms[c] {
			if !seen[o] {
				seen[o] = true
				out = append(out, o)
			}
		}
	}
	return out
}

// HasConcept reports whether the normalised term t is in the synonym
// table (a query joins two words into one term when it is: "shut down"
// → shutdown, "turn on" → turnon).
func HasConcept(t string) bool { return len(concepts[t]) > 0 }

var conceptTerms = map[string][]string{}

// concepts maps normalised terms to the concepts they belong to (a term
// may have several: restart is a unit's and the machine's). Keep it small
// and about this domain; it is documented in docs/search.md. Phrases are
// written as one word ("networktime", "processid"): the query side joins
// adjacent words.
var concepts = map[string][]string{}

// conceptGroups is the table, in a fixed order so that every process
// builds the same vectors.
var conceptGroups = [][2]string{
	{"timezone", "timezone tz zone timezones"},
	{"ntp", "ntp networktime timesync synchronization synchronize synchronized sync synced"},
	{"time", "time clock systemclock datetime date"},
	{"rtc", "rtc hwclock hardwareclock realtimeclock"},
	{"usec", "usec microsecond microseconds"},
	{"hostname", "hostname host hostnames machinename computername"},
	{"keyboard", "keyboard keymap keymaps layout x11layout vconsolekeymap kbd"},
	{"language", "locale language lang languages"},
	{"start", "start launch activate begin"},
	{"stop", "stop halt deactivate terminate"},
	{"restart", "restart reload bounce"},
	{"enable", "enable enabled autostart boot turnon"},
	{"disable", "disable disabled turnoff"},
	{"failed", "fail failed failure error errors broken crash crashed"},
	{"poweroff", "poweroff shutdown halt powerdown switchoff"},
	{"reboot", "reboot restart"},
	{"signal", "signal signals event events notification emit emitted"},
	{"property", "property properties attribute attributes"},
	{"unit", "unit units service services daemon daemons"},
	{"os", "os operatingsystem distribution distro release"},
	{"kernel", "kernel uname"},
	{"change", "change changed changes modify modified update updated set apply applied"},
	{"rollback", "rollback rolledback revert reverted undo undone"},
	{"refused", "refused refuse denied deny reject rejected forbidden"},
	{"drift", "drift drifted diverge diverged outofsync"},
	{"audit", "audit history log journal"},
	{"chassis", "chassis formfactor laptop desktop server vm container"},
	{"mask", "mask masked"},
	{"kill", "kill killed sigkill sigterm"},
	{"bridge", "bridge bridges br ovs switch"},
	{"peer", "peer peers wireguard wg"},
	{"interface", "nic link netdev"},
	{"env", "environment env variable variables"},
	{"version", "version versions"},
	{"pid", "pid processid"},
	{"location", "location located place"},
	{"config", "config configuration conf"},
}

func init() {
	for _, g := range conceptGroups {
		c := g[0]
		for _, w := range strings.Fields(g[1]) {
			for _, t := range token.Tokens(w) {
				if !slices.Contains(concepts[t], c) {
					concepts[t] = append(concepts[t], c)
				}
				if !slices.Contains(conceptTerms[c], t) {
					conceptTerms[c] = append(conceptTerms[c], t)
				}
			}
		}
	}
}
