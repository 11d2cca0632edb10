package ledger

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/mod/sumdb/note"
)

// ErrNoKey is returned by Append when the log's private key is missing.
var ErrNoKey = errors.New("audit signing key missing")

// keyring holds the log's identity: the note signer (private key, may be
// nil when only key.pub is present) and the verifier.
type keyring struct {
	origin   string // = key name = checkpoint origin line
	vkey     string // "origin+hash+base64", printable verifier key
	signer   note.Signer
	verifier note.Verifier
}

// newOrigin returns a fresh origin for a new log:
// "op-dbus/<hostname at creation>/audit/<random log id>".
func newOrigin() (string, error) {
	host, _ := os.Hostname()
	var b strings.Builder
	for _, r := range host {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '.', r == '-', r == '_':
			b.WriteRune(r)
		default:
			b.WriteByte('_')
		}
	}
	h := b.String()
	if h == "" {
		h = "localhost"
	}
	if len(h) > 64 {
		h = h[:64]
	}
	id := make([]byte, 8)
	if _, err := rand.Read(id); err != nil {
		return "", err
	}
	return "op-dbus/" + h + "/audit/" + hex.EncodeToString(id), nil
}

// verifierKeyFromSigner derives the note verifier key from a note signer key.
func verifierKeyFromSigner(skey string) (string, error) {
	parts := strings.SplitN(skey, "+", 5)
	if len(parts) != 5 || parts[0] != "PRIVATE" || parts[1] != "KEY" {
		return "", errors.New("not a note signer key (want PRIVATE+KEY+name+hash+base64)")
	}
	raw, err := base64.StdEncoding.DecodeString(parts[4])
	if err != nil || len(raw) != 1+ed25519.SeedSize || raw[0] != 1 {
		return "", errors.New("not an ed25519 note signer key")
	}
	pub := ed25519.NewKeyFromSeed(raw[1:]).Public().(ed25519.PublicKey)
	return note.NewEd25519VerifierKey(parts[2], pub)
}

// loadKey reads dir/key (and dir/key.pub). When neither exists and create
// is set, it generates a new key pair. With only key.pub present the
// keyring can verify but not sign.
func loadKey(dir string, create bool) (*keyring, error) {
	keyPath := filepath.Join(dir, fileKey)
	pubPath := filepath.Join(dir, fileKeyPub)

	skeyBytes, errK := os.ReadFile(keyPath)
	vkeyBytes, errP := os.ReadFile(pubPath)
	if errK != nil && !errors.Is(errK, fs.ErrNotExist) {
		return nil, fmt.Errorf("audit key %s: %w", keyPath, errK)
	}
	if errP != nil && !errors.Is(errP, fs.ErrNotExist) {
		return nil, fmt.Errorf("audit public key %s: %w", pubPath, errP)
	}
	if errK != nil && errP != nil {
		if !create {
			return nil, fmt.Errorf("%w: %s does not exist but the log in %s already has entries; restore the key from a backup (a new key would not verify the existing checkpoints)", ErrNoKey, keyPath, dir)
		}
		return createKey(dir)
	}

	k := &keyring{}
	if errK == nil {
		if fi, err := os.Stat(keyPath); err == nil && fi.Mode().Perm()&0o077 != 0 {
			return nil, fmt.Errorf("audit key %s has mode %04o: it must not be readable by group or others (chmod 600 %s)", keyPath, fi.Mode().Perm(), keyPath)
		}
		skey := strings.TrimSpace(string(skeyBytes))
		s, err := note.NewSigner(skey)
		if err != nil {
			return nil, fmt.Errorf("audit key %s is malformed: %v", keyPath, err)
		}
		vkey, err := verifierKeyFromSigner(skey)
		if err != nil {
			return nil, fmt.Errorf("audit key %s: %v", keyPath, err)
		}
		k.signer, k.vkey = s, vkey
		if errP == nil && strings.TrimSpace(string(vkeyBytes)) != vkey {
			return nil, fmt.Errorf("audit public key %s does not match the private key %s (one of them was replaced)", pubPath, keyPath)
		}
	} else {
		k.vkey = strings.TrimSpace(string(vkeyBytes))
	}
	v, err := note.NewVerifier(k.vkey)
	if err != nil {
		return nil, fmt.Errorf("audit public key %s is malformed: %v", pubPath, err)
	}
	k.verifier, k.origin = v, v.Name()
	return k, nil
}

func createKey(dir string) (*keyring, error) {
	origin, err := newOrigin()
	if err != nil {
		return nil, err
	}
	skey, vkey, err := note.GenerateKey(rand.Reader, origin)
	if err != nil {
		return nil, err
	}
	if err := writeFileAtomic(dir, fileKey, []byte(skey+"\n"), 0o600); err != nil {
		return nil, fmt.Errorf("create audit key: %w", err)
	}
	if err := writeFileAtomic(dir, fileKeyPub, []byte(vkey+"\n"), 0o644); err != nil {
		return nil, fmt.Errorf("create audit public key: %w", err)
	}
	s, err := note.NewSigner(skey)
	if err != nil {
		return nil, err
	}
	v, err := note.NewVerifier(vkey)
	if err != nil {
		return nil, err
	}
	return &keyring{origin: origin, vkey: vkey, signer: s, verifier: v}, nil
}

// writeFileAtomic writes dir/name via a temporary file, fsync and rename,
// then fsyncs dir.
func writeFileAtomic(dir, name string, data []byte, mode os.FileMode) error {
	tmp := filepath.Join(dir, "."+name+".tmp")
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, mode)
	if err != nil {
		return err
	}
	if err := f.Chmod(mode); err != nil {
		f.Close()
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, filepath.Join(dir, name)); err != nil {
		return err
	}
	return syncDir(dir)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// parseVerifier parses a printable public key given by a user.
func parseVerifier(publicKey string) (note.Verifier, error) {
	publicKey = strings.TrimSpace(publicKey)
	if publicKey == "" {
		return nil, errors.New("no public key given (`op-dbus audit key` prints the log's key, also stored in <state-dir>/audit/key.pub)")
	}
	v, err := note.NewVerifier(publicKey)
	if err != nil {
		return nil, fmt.Errorf("public key %q is not a note verifier key (want <origin>+<hash>+<base64>): %v", publicKey, err)
	}
	return v, nil
}
