package api

import (
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"regexp"
	"strings"
	"sync"
	"testing"
)

// Fifty concurrent POST /v1/apply of one plan hash: one applies, the rest
// are refused, and every refusal by the lock names the holder's pid (the
// pid is written under the lock protocol, never read before it exists).
func TestTestbedConcurrentAppliesNameThePID(t *testing.T) {
	e := newBed(t)
	srv := httptest.NewServer(e.h)
	defer srv.Close()
	c := srv.Client()
	for round := 0; round < 3; round++ {
		doc := fmt.Sprintf(`{"version":1,"plugins":{"hostname":{"location":"concurrent %d"}}}`, round)
		st, body, _ := do(t, c, "POST", srv.URL+"/v1/plan", "application/json", []byte(doc))
		var p struct {
			PlanHash string `json:"plan_hash"`
		}
		if st != 200 || json.Unmarshal(body, &p) != nil {
			t.Fatalf("plan: %d %s", st, body)
		}
		pid := regexp.MustCompile(`\(pid [1-9][0-9]*\)`)
		var wg sync.WaitGroup
		var mu sync.Mutex
		codes := map[string]int{}
		for i := 0; i < 50; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				st, body, _ := do(t, c, "POST", srv.URL+"/v1/apply", "application/json", []byte(fmt.Sprintf(`{"plan_hash":%q}`, p.PlanHash)))
				var eb errorBody
				_ = json.Unmarshal(body, &eb)
				key := fmt.Sprint(st)
				if st != 200 {
					key += " " + eb.Code
				}
				if eb.Code == "locked" && !pid.MatchString(eb.Error) {
					t.Errorf("lock refusal without a pid: %s", body)
				}
				mu.Lock()
				codes[key]++
				mu.Unlock()
			}()
		}
		wg.Wait()
		t.Logf("round %d: %v", round, codes)
		if codes["200"] != 1 {
			t.Errorf("round %d: %d applies succeeded, want exactly 1: %v", round, codes["200"], codes)
		}
		for k := range codes {
			if k != "200" && !strings.HasSuffix(k, " locked") && !strings.HasSuffix(k, " unknown_plan") && !strings.HasSuffix(k, " stale_plan") {
				t.Errorf("round %d: unexpected answer %q: %v", round, k, codes)
			}
		}
		if got := e.location(t); got != fmt.Sprintf(`s "concurrent %d"`, round) {
			t.Errorf("round %d: Location %s", round, got)
		}
	}
}
