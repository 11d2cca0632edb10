package api

import (
	"net/http/httptest"
	"strings"
	"testing"
)

// Every endpoint that takes a JSON body answers a duplicate key, at any
// depth, with 400 duplicate_key naming its path; nothing is applied.
func TestTestbedDuplicateKeys(t *testing.T) {
	e := newBed(t)
	srv := httptest.NewServer(e.h)
	defer srv.Close()
	c := srv.Client()
	u := srv.URL

	before := e.location(t)
	st, body, _ := do(t, c, "POST", u+"/v1/plan", "application/json", []byte(`{"version":1,"plugins":{"hostname":{"location":"dup test"}}}`))
	if st != 200 {
		t.Fatalf("plan: %d %s", st, body)
	}
	hash := between(string(body), `"plan_hash": "`, `"`)
	zero := "sha256:" + strings.Repeat("0", 64)

	type dup struct{ body, path string }
	cases := map[string][]dup{
		"/v1/apply": {
			// The issue: the last plan_hash won.
			{`{"plan_hash":"` + hash + `","plan_hash":"` + zero + `"}`, "plan_hash"},
			{`{"plan_hash":"` + zero + `","plan_hash":"` + hash + `"}`, "plan_hash"},
			{`{"plan_hash":"` + zero + `","plan\u005fhash":"` + hash + `"}`, "plan_hash"},
			{`{"plan_hash":"` + hash + `","confirm_within":"1h","confirm_within":"0s"}`, "confirm_within"},
		},
		"/v1/plan": {
			{`{"version":1,"version":1,"plugins":{}}`, "version"},
			{`{"version":1,"plugins":{"hostname":{"location":"a","location":"b"}}}`, "plugins.hostname.location"},
			{`{"version":1,"plugins":{"hostname":{"location":"a"},"hostname":{}}}`, "plugins.hostname"},
		},
	}
	for _, rt := range routes {
		if rt.method == "GET" {
			continue
		}
		ds := cases[rt.path]
		if len(ds) == 0 {
			t.Errorf("%s %s takes a body: add its duplicate-key cases here", rt.method, rt.path)
		}
		for _, d := range ds {
			st, body, _ := do(t, c, rt.method, u+rt.path, "application/json", []byte(d.body))
			eb := wantError(t, rt.path+" "+d.body, st, body, 400, "duplicate_key", d.path+": duplicate key")
			if rt.path == "/v1/plan" && (len(eb.Problems) != 1 || eb.Problems[0].Path != d.path || eb.Problems[0].Message != "duplicate key") {
				t.Errorf("%s %s: problems %+v", rt.path, d.body, eb.Problems)
			}
		}
	}

	// A case variant is not the field (encoding/json would let it override).
	st, body, _ = do(t, c, "POST", u+"/v1/apply", "application/json", []byte(`{"plan_hash":"`+zero+`","PLAN_HASH":"`+hash+`"}`))
	wantError(t, "case variant", st, body, 400, "unknown_field", `PLAN_HASH: unknown field (did you mean "plan_hash"?`)

	if got := e.location(t); got != before {
		t.Fatalf("a refused request changed the host: %s, was %s", got, before)
	}
	// The plan is still there to apply with a well-formed body.
	if st, body, _ := do(t, c, "POST", u+"/v1/apply", "application/json", []byte(`{"plan_hash":"`+hash+`"}`)); st != 200 {
		t.Fatalf("apply: %d %s", st, body)
	}
}

func between(s, a, b string) string {
	_, s, _ = strings.Cut(s, a)
	s, _, _ = strings.Cut(s, b)
	return s
}

func TestDecodeApplyStrict(t *testing.T) {
	h := "sha256:" + strings.Repeat("ab", 32)
	for _, c := range []struct{ body, code, msg string }{
		{`{"plan_hash":"` + h + `","plan_hash":"` + h + `"}`, "duplicate_key", "plan_hash: duplicate key"},
		{`{"plan_hash":"` + h + `","confirm_whithin":"1s"}`, "unknown_field", "confirm_whithin: unknown field (known: plan_hash, confirm_within)"},
		{`{"plan_hash":"` + h + `"} {}`, "malformed_json", "unexpected data after the request object"},
		{`{"plan_hash":`, "malformed_json", "empty or truncated body"},
		{``, "malformed_json", "empty or truncated body"},
		{`{"plan_hash" 1}`, "malformed_json", "malformed JSON at byte 13"},
		{"{\"plan_hash\":\"\xff\"}", "malformed_json", "malformed JSON: invalid UTF-8 at byte 14"},
		{`{"plan_hash":1}`, "bad_request", "plan_hash: expected string, got JSON number"},
		{`null`, "bad_request", "plan_hash: required"},
	} {
		_, _, be := decodeApply([]byte(c.body))
		if be == nil || be.code != c.code || !strings.Contains(be.msg, c.msg) {
			t.Errorf("%q: got %+v, want %s %q", c.body, be, c.code, c.msg)
		}
	}
}
