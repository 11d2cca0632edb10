package nixos

import (
	"encoding/json"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/op-dbus/op-dbus/internal/plugins/wireguard"
)

func wgKey(t *testing.T) wgtypes.Key {
	t.Helper()
	k, err := wgtypes.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// A live WireGuard device (as the plugin's query reports it) becomes
// networking.wireguard.interfaces.NAME; no generated file holds the private
// or preshared key, in any encoding.
func TestWireGuardFromQueryHasNoSecrets(t *testing.T) {
	priv, psk := wgKey(t), wgKey(t)
	a, b := wgKey(t).PublicKey(), wgKey(t).PublicKey()
	st := wireguard.StateOf([]*wgtypes.Device{{
		Name: "wg0", PrivateKey: priv, PublicKey: priv.PublicKey(), ListenPort: 51820, FirewallMark: 7,
		Peers: []wgtypes.Peer{
			{PublicKey: a, PresharedKey: psk, Endpoint: &net.UDPAddr{IP: net.ParseIP("192.0.2.1"), Port: 51820},
				AllowedIPs: []net.IPNet{{IP: net.IPv4(10, 0, 0, 2), Mask: net.CIDRMask(32, 32)}}, PersistentKeepaliveInterval: 25 * time.Second},
			{PublicKey: b},
		},
	}})
	doc, err := json.Marshal(map[string]any{"version": 1, "plugins": map[string]any{"wireguard": st}})
	if err != nil {
		t.Fatal(err)
	}
	files, err := Generate(Input{Doc: doc, Source: "the live host", System: "x86_64-linux"})
	if err != nil {
		t.Fatal(err)
	}
	net := string(files["network.nix"])
	for _, w := range []string{
		"networking.wireguard.interfaces.wg0 = {",
		`privateKeyFile = "/etc/wireguard/wg0.key";`,
		"whose public key is " + priv.PublicKey().String(),
		"listenPort = 51820;",
		`fwMark = "7";`,
		`publicKey = "` + a.String() + `";`,
		`endpoint = "192.0.2.1:51820";`,
		`allowedIPs = [ "10.0.0.2/32" ];`,
		"persistentKeepalive = 25;",
		`publicKey = "` + b.String() + `";`,
		"peer " + a.String() + " has a preshared key",
	} {
		if !strings.Contains(net, w) {
			t.Errorf("network.nix lacks %s:\n%s", w, net)
		}
	}
	if strings.Contains(net, "and WireGuard are not captured") {
		t.Errorf("network.nix still says WireGuard is not captured:\n%s", net)
	}
	if r := string(files["REPORT.md"]); !strings.Contains(r, "networking.wireguard.interfaces.wg0") || !strings.Contains(r, "wireguard wg0 private key") {
		t.Errorf("REPORT.md does not map wg0 or name the key left to copy:\n%s", r)
	}
	for name, f := range files {
		for _, k := range []wgtypes.Key{priv, psk} {
			for _, form := range []string{k.String(), strings.TrimRight(k.String(), "="), fmt.Sprintf("%x", k[:]), string(k[:])} {
				if strings.Contains(string(f), form) {
					t.Errorf("%s contains a secret key", name)
				}
			}
		}
	}
}

// From a desired document the key files are named as they are; the
// generator never opens them.
func TestWireGuardFromDocumentNamesKeyFiles(t *testing.T) {
	pk := wgKey(t).PublicKey().String()
	doc := `{"version":1,"plugins":{"wireguard":{"interfaces":{"wg0":{"private_key_file":"/run/keys/wg0","listen_port":1,
		"peers":{"` + pk + `":{"allowed_ips":[],"preshared_key_file":"/run/keys/psk","persistent_keepalive":"25s"},
		         "` + wgKey(t).PublicKey().String() + `":{"state":"absent"}}}}}}}`
	files, err := Generate(Input{Doc: []byte(doc), Source: "doc.json"})
	if err != nil {
		t.Fatal(err)
	}
	net := string(files["network.nix"])
	for _, w := range []string{`privateKeyFile = "/run/keys/wg0";`, `presharedKeyFile = "/run/keys/psk";`, "persistentKeepalive = 25;", "allowedIPs = [ ];"} {
		if !strings.Contains(net, w) {
			t.Errorf("network.nix lacks %s:\n%s", w, net)
		}
	}
	if strings.Count(net, "publicKey = ") != 1 || strings.Contains(net, "op-dbus never copies") {
		t.Errorf("absent peer written, or a key note for a named key file:\n%s", net)
	}
}
