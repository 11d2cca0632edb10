package api

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestServeTCPTLS(t *testing.T) {
	dir := t.TempDir()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "op-dbus"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalECPrivateKey(key)
	cf, kf, tf := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem"), filepath.Join(dir, "token")
	os.WriteFile(cf, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
	os.WriteFile(kf, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600)
	os.WriteFile(tf, []byte("0123456789abcdef0123"), 0o600)
	addr := freePort(t)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, 200, map[string]string{"client": clientOf(r.Context())})
	})
	stop := serve(t, h, ListenOptions{Socket: filepath.Join(dir, "api.sock"), TCP: addr, TokenFile: tf, CertFile: cf, KeyFile: kf})
	defer stop()
	pool := x509.NewCertPool()
	cert, _ := x509.ParseCertificate(der)
	pool.AddCert(cert)
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	st, body, _ := do(t, c, "GET", "https://"+addr+"/", "", nil, "Authorization", "Bearer 0123456789abcdef0123")
	if st != 200 || string(body) != "{\n  \"client\": \"token\"\n}\n" {
		t.Fatalf("TLS with token: %d %s", st, body)
	}
	st, body, _ = do(t, c, "GET", "https://"+addr+"/", "", nil)
	wantError(t, "TLS without token", st, body, 401, "unauthorized", "missing")
	// Plain HTTP to the TLS port does not get in.
	if st, _, _ := do(t, &http.Client{Timeout: 5 * time.Second}, "GET", "http://"+addr+"/", "", nil, "Authorization", "Bearer 0123456789abcdef0123"); st == 200 {
		t.Fatal("plain HTTP served on the TLS port")
	}
}
