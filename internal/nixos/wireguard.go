package nixos

import (
	"encoding/json"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"sort"

	"github.com/op-dbus/op-dbus/internal/plugins/wireguard"
)

// wireguardInto adds networking.wireguard.interfaces.NAME to the network
// module from the wireguard plugin's state (a query or a desired
// document). No key is ever written: the state holds none. A query does
// not know where the private key lives, so privateKeyFile is then a
// conventional path with a comment naming the public key whose private key
// belongs there.
func wireguardInto(s *Set, v any, r *report) error {
	if v == nil {
		return nil
	}
	var ws wireguard.State
	b, err := json.Marshal(v)
	if err == nil {
		err = json.Unmarshal(b, &ws)
	}
	if err != nil {
		return fmt.Errorf("plugins.wireguard: %w", err)
	}
	for _, name := range slices.Sorted(maps.Keys(ws.Interfaces)) {
		ifc := ws.Interfaces[name]
		if ifc == nil || wireguard.ValidInterfaceName(name) != nil {
			continue
		}
		set := &Set{}
		keyFile := ifc.PrivateKeyFile
		var keyNote []string
		if keyFile == "" {
			keyFile = "/etc/wireguard/" + name + ".key"
			keyNote = []string{"op-dbus never copies private keys off a host. Put the private key"}
			if ifc.PublicKey != "" {
				keyNote = append(keyNote, "whose public key is "+ifc.PublicKey+" in this file,")
			} else {
				keyNote = append(keyNote, "for this interface in this file,")
			}
			keyNote = append(keyNote, "readable by root only (or set generatePrivateKeyFile = true for a new key).")
			r.left("wireguard "+name+" private key", "secrets are never exported; copy the key to "+keyFile+" yourself")
		}
		set.Add("privateKeyFile", keyFile, keyNote...)
		if ifc.ListenPort != 0 {
			set.Add("listenPort", ifc.ListenPort)
		}
		if ifc.FirewallMark != nil && *ifc.FirewallMark != 0 {
			set.Add("fwMark", fmt.Sprint(*ifc.FirewallMark))
		}
		pks := make([]string, 0, len(ifc.Peers))
		for pk, p := range ifc.Peers {
			if p != nil && p.State != "absent" {
				pks = append(pks, pk)
			}
		}
		sort.Strings(pks)
		peers := make([]any, 0, len(pks))
		var pskNote []string
		for _, pk := range pks {
			p := ifc.Peers[pk]
			peer := map[string]any{"publicKey": pk, "allowedIPs": append([]string{}, p.AllowedIPs...)}
			if p.Endpoint != "" {
				peer["endpoint"] = p.Endpoint
			}
			if secs, set, err := wireguard.Keepalive(p.PersistentKeepalive); err == nil && set && secs > 0 {
				peer["persistentKeepalive"] = secs
			}
			switch {
			case p.PresharedKeyFile != "":
				peer["presharedKeyFile"] = p.PresharedKeyFile
			case p.HasPresharedKey:
				pskNote = append(pskNote, "peer "+pk+" has a preshared key: add its presharedKeyFile.")
				r.left("wireguard "+name+" peer "+pk+" preshared key", "secrets are never exported; add presharedKeyFile yourself")
			}
			peers = append(peers, peer)
		}
		set.Add("peers", peers, pskNote...)
		s.Entries = append(s.Entries, Entry{
			Path:    []string{"networking", "wireguard", "interfaces", name},
			Value:   set,
			Comment: []string{"WireGuard interface " + name + "; its addresses (ips) and routes come from the network configuration."},
		})
		r.mapped("wireguard.interfaces."+name, "networking.wireguard.interfaces."+AttrName(name)+" (in network.nix)")
	}
	return nil
}

// wireguardRoutes: destinations networking.wireguard routes itself
// (allowedIPsAsRoutes), by interface, so network.nix does not add them again.
func wireguardRoutes(ws *wireguard.State) map[string]map[string]bool {
	out := map[string]map[string]bool{}
	for name, ifc := range ws.Interfaces {
		if ifc == nil {
			continue
		}
		for _, p := range ifc.Peers {
			if p == nil || p.State == "absent" {
				continue
			}
			for _, a := range p.AllowedIPs {
				if pf, err := netip.ParsePrefix(a); err == nil {
					if out[name] == nil {
						out[name] = map[string]bool{}
					}
					out[name][pf.Masked().String()] = true
				}
			}
		}
	}
	return out
}
