package main

import (
	"os"
	"testing"
)

// unavailable stops a test that cannot run here: in CI (CI=true) it fails,
// because CI installs everything these tests need; elsewhere it skips,
// saying what is missing.
func unavailable(t *testing.T, why string) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatal(why)
	}
	t.Skip(why)
}
