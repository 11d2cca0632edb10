package api

import (
	"encoding/json"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/op-dbus/op-dbus/internal/control"
)

// FuzzDecodeApply: the apply body decoder never panics, accepts only what
// re-encodes to the same request, and names unknown fields.
func FuzzDecodeApply(f *testing.F) {
	h := "sha256:" + strings.Repeat("ab", 32)
	f.Add([]byte(`{"plan_hash":"` + h + `"}`))
	f.Add([]byte(`{"plan_hash":"` + h + `","confirm_within":"60s"}`))
	f.Add([]byte(`{"plan_hash":"` + h + `","extra":1}`))
	f.Add([]byte(`{"plan_hash":`))
	f.Add([]byte(`{"plan_hash":"x"} {}`))
	f.Add([]byte(`[]`))
	f.Add([]byte(`{"plan_hash":"` + h + `","plan_hash":"sha256:` + strings.Repeat("0", 64) + `"}`))
	f.Add([]byte(`{"plan_hash":"` + h + `","PLAN_HASH":"x"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		req, d, err := decodeApply(b)
		if err != nil {
			if err.code == "" || err.msg == "" {
				t.Fatalf("error without code or message: %+v", err)
			}
			return
		}
		if d < 0 || !strings.HasPrefix(req.PlanHash, "sha256:") {
			t.Fatalf("accepted %q as %+v %v", b, req, d)
		}
		re, _ := json.Marshal(req)
		req2, d2, err2 := decodeApply(re)
		if err2 != nil || req2 != req || d2 != d {
			t.Fatalf("round trip %q: %+v %v %v", b, req2, d2, err2)
		}
	})
}

// FuzzDecodePlanBody: the plan body decoder (content type + strict state
// document) never panics and always answers with a code and a message.
func FuzzDecodePlanBody(f *testing.F) {
	svc := control.New(control.Options{StateDir: f.TempDir()})
	defer svc.Close()
	f.Add("application/json", []byte(`{"version":1,"plugins":{"hostname":{"location":"rack 1"}}}`))
	f.Add("application/yaml", []byte("version: 1\nplugins:\n  hostname:\n    location: rack 1\n"))
	f.Add("", []byte(`{"version":1,"plugins":{"hostname":{"locaton":"x"}}}`))
	f.Add("application/json; charset=utf-8", []byte(`{"version":1,`))
	f.Add("text/html", []byte(`{}`))
	f.Add("application/json", []byte("\xff"))
	f.Add("application/json", []byte(`{"version":1,"plugins":{"hostname":{"location":"a","location":"b"}}}`))
	f.Fuzz(func(t *testing.T, ctype string, b []byte) {
		doc, err := decodePlanBody(svc, ctype, b)
		if err != nil {
			if err.code == "" || err.msg == "" || !utf8.ValidString(err.msg) && utf8.Valid(b) {
				t.Fatalf("bad error %+v", err)
			}
			return
		}
		if doc == nil {
			t.Fatal("nil document without an error")
		}
	})
}
