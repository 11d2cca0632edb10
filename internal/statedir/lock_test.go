package statedir

import (
	"regexp"
	"sync"
	"testing"

	"github.com/op-dbus/op-dbus/internal/errkind"
)

// Many goroutines race for the lock, each through its own open file
// description (as separate requests of one daemon do): exactly one wins
// each round and every refusal names a pid.
func TestLockRefusalsAlwaysNameThePID(t *testing.T) {
	d := New(t.TempDir())
	pidRe := regexp.MustCompile(`\(pid [1-9][0-9]*\)`)
	for round := 0; round < 20; round++ {
		var wg sync.WaitGroup
		var mu sync.Mutex
		won := 0
		for i := 0; i < 50; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				unlock, err := d.Lock()
				if err != nil {
					if !errkind.Is(err, errkind.Locked) || !pidRe.MatchString(err.Error()) {
						t.Errorf("refusal without kind or pid: %v", err)
					}
					return
				}
				mu.Lock()
				won++
				mu.Unlock()
				unlock()
			}()
		}
		wg.Wait()
		if won == 0 {
			t.Fatalf("round %d: nobody got the lock", round)
		}
	}
}

func TestLockIsExclusive(t *testing.T) {
	d := New(t.TempDir())
	unlock, err := d.Lock()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.Lock(); !errkind.Is(err, errkind.Locked) {
		t.Fatalf("second Lock: %v, want Locked", err)
	}
	unlock()
	unlock2, err := d.Lock()
	if err != nil {
		t.Fatalf("Lock after unlock: %v", err)
	}
	unlock2()
}
