package wireguard

import (
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/op-dbus/op-dbus/internal/plugin"
)

// Op kinds, in Op.Data.
const (
	kindCreate    = "create"
	kindConfigure = "configure"
)

// opData is the machine form of a wireguard op. Keys are named by file and
// by public key only: Apply reads the files; plans, journals and audit
// records never hold a secret.
type opData struct {
	Kind      string `json:"kind"`
	Interface string `json:"interface"`
	// PrivateKeyFile is read by Apply; PublicKey is the public key of the
	// key the file held when the plan was made (Apply refuses a file that
	// changed since).
	PrivateKeyFile string   `json:"private_key_file,omitempty"`
	PublicKey      string   `json:"public_key,omitempty"`
	ListenPort     *int     `json:"listen_port,omitempty"`
	FirewallMark   *int     `json:"fwmark,omitempty"`
	Peers          []peerOp `json:"peers,omitempty"`
}

// peerOp is one peer's part of a configure op: a removal, or the fields to
// set (absent fields are left as they are).
type peerOp struct {
	PublicKey  string   `json:"public_key"`
	Remove     bool     `json:"remove,omitempty"`
	Endpoint   string   `json:"endpoint,omitempty"`
	AllowedIPs []string `json:"allowed_ips,omitzero"` // replaces the set when non-nil
	// Keepalive in seconds (0: off) when set.
	Keepalive        *int   `json:"persistent_keepalive,omitempty"`
	PresharedKeyFile string `json:"preshared_key_file,omitempty"`
}

// Plan implements plugin.Plugin. Per interface: create it if it does not
// exist, then one configure op holding every change (private key, listen
// port, fwmark, peers added, updated and removed), applied in one
// ConfigureDevice call.
func (p *Plugin) Plan(current, desired any) ([]plugin.Op, error) {
	cur, _ := current.(*State)
	des, _ := desired.(*State)
	if des == nil || len(des.Interfaces) == 0 {
		return nil, nil
	}
	if cur == nil {
		cur = &State{}
	}
	var ops []plugin.Op
	for _, name := range slices.Sorted(maps.Keys(des.Interfaces)) {
		d := des.Interfaces[name]
		if d == nil {
			continue
		}
		if err := ValidInterfaceName(name); err != nil {
			return nil, fmt.Errorf("interfaces%s: %w", index(name), err)
		}
		path := "interfaces" + index(name)
		item := "interfaces/" + name
		c := cur.Interfaces[name]
		var createID string
		if c == nil {
			createID = "wireguard/create/" + name
			ops = append(ops, plugin.Op{
				ID:          createID,
				Item:        item,
				Description: "create WireGuard interface " + name,
				Data:        plugin.MustData(opData{Kind: kindCreate, Interface: name}),
				// The pre-apply state has no interface to go back to, and
				// removal of an interface is not managed.
				Reversible: false,
				Changes:    []plugin.Change{{Path: path, Current: nil, Desired: "present"}},
			})
			c = &Interface{}
		}
		op, err := planInterface(name, path, c, d, cur.files)
		if err != nil {
			return nil, err
		}
		if op == nil {
			continue
		}
		op.Item = item
		if createID != "" {
			op.DependsOn = []string{createID}
		}
		ops = append(ops, *op)
	}
	return ops, nil
}

func planInterface(name, path string, c, d *Interface, files map[string]keyFile) (*plugin.Op, error) {
	data := opData{Kind: kindConfigure, Interface: name}
	var changes []plugin.Change
	var what []string
	reversible := true
	change := func(p string, cur, des any) {
		changes = append(changes, plugin.Change{Path: p, Current: cur, Desired: des})
	}

	if f := d.PrivateKeyFile; f != "" {
		kf, ok := files[f]
		if !ok {
			return nil, fmt.Errorf("%s.private_key_file: %s was not read before planning (plan needs the live state from QueryFor)", path, f)
		}
		if kf.public != c.PublicKey {
			data.PrivateKeyFile, data.PublicKey = f, kf.public
			// Only public keys: the change a person reads and the
			// verification compares is the public key the file yields.
			change(path+".public_key", orNil(c.PublicKey), kf.public)
			what = append(what, "private key from "+f)
			// The old private key is not known to op-dbus, so it cannot
			// be put back.
			reversible = false
		}
	}
	if d.ListenPort != 0 && d.ListenPort != c.ListenPort {
		port := d.ListenPort
		data.ListenPort = &port
		change(path+".listen_port", orNil(c.ListenPort), port)
		what = append(what, fmt.Sprintf("listen port %d", port))
	}
	if d.FirewallMark != nil && (c.FirewallMark == nil || *c.FirewallMark != *d.FirewallMark) {
		fw := *d.FirewallMark
		data.FirewallMark = &fw
		var curFw any
		if c.FirewallMark != nil {
			curFw = *c.FirewallMark
		}
		change(path+".fwmark", curFw, fw)
		what = append(what, fmt.Sprintf("fwmark %d", fw))
	}

	// Live peers by key value: a desired key may be written in a
	// non-canonical base64 form.
	live := map[wgtypes.Key]*Peer{}
	for pk, lp := range c.Peers {
		if k, err := ParseKey(pk); err == nil && lp != nil {
			live[k] = lp
		}
	}
	named := map[wgtypes.Key]bool{}
	var added, updated, removed int
	for _, pk := range slices.Sorted(maps.Keys(d.Peers)) {
		dp := d.Peers[pk]
		pp := fmt.Sprintf("%s.peers[%q]", path, pk)
		k, err := ParseKey(pk)
		if err != nil {
			return nil, fmt.Errorf("%s: peer %w", pp, err)
		}
		named[k] = true
		if dp == nil {
			continue
		}
		lp := live[k]
		if dp.State == "absent" {
			if lp != nil {
				data.Peers = append(data.Peers, peerOp{PublicKey: k.String(), Remove: true})
				change(pp, "present", "absent")
				removed++
				if lp.HasPresharedKey {
					reversible = false
				}
			}
			continue
		}
		po, ch, rev, err := planPeer(pp, k, lp, dp, files)
		if err != nil {
			return nil, err
		}
		if po == nil {
			continue
		}
		data.Peers = append(data.Peers, *po)
		changes = append(changes, ch...)
		reversible = reversible && rev
		if lp == nil {
			added++
		} else {
			updated++
		}
	}
	if d.ReplacePeers {
		var extra []string
		for k, lp := range live {
			if !named[k] {
				extra = append(extra, k.String())
				if lp.HasPresharedKey {
					reversible = false
				}
			}
		}
		sort.Strings(extra)
		for _, pk := range extra {
			data.Peers = append(data.Peers, peerOp{PublicKey: pk, Remove: true})
			change(fmt.Sprintf("%s.peers[%q]", path, pk), "present", "absent (replace_peers)")
			removed++
		}
	}
	if len(changes) == 0 {
		return nil, nil
	}
	for _, n := range []struct {
		n    int
		verb string
	}{{added, "add"}, {updated, "update"}, {removed, "remove"}} {
		switch {
		case n.n == 1:
			what = append(what, n.verb+" 1 peer")
		case n.n > 1:
			what = append(what, fmt.Sprintf("%s %d peers", n.verb, n.n))
		}
	}
	return &plugin.Op{
		ID:          "wireguard/configure/" + name,
		Description: "configure WireGuard interface " + name + ": " + strings.Join(what, ", "),
		Data:        plugin.MustData(data),
		Reversible:  reversible,
		Changes:     changes,
	}, nil
}

// planPeer compares one desired peer with the live one (nil: not there)
// and returns what to send, the changes, and whether applying the previous
// state undoes them.
func planPeer(pp string, k wgtypes.Key, lp, dp *Peer, files map[string]keyFile) (*peerOp, []plugin.Change, bool, error) {
	po := &peerOp{PublicKey: k.String()}
	var changes []plugin.Change
	reversible := true
	isNew := lp == nil
	if isNew {
		lp = &Peer{}
	}
	if dp.Endpoint != "" {
		ap, err := ParseEndpoint(dp.Endpoint)
		if err != nil {
			return nil, nil, false, fmt.Errorf("%s.endpoint: %w", pp, err)
		}
		if ap.String() != lp.Endpoint {
			po.Endpoint = ap.String()
			changes = append(changes, plugin.Change{Path: pp + ".endpoint", Current: orNil(lp.Endpoint), Desired: ap.String()})
			if !isNew && lp.Endpoint == "" {
				// WireGuard cannot forget an endpoint once set.
				reversible = false
			}
		}
	}
	if dp.AllowedIPs != nil {
		want := make([]string, 0, len(dp.AllowedIPs))
		for i, a := range dp.AllowedIPs {
			pfx, err := ParseAllowedIP(a)
			if err != nil {
				return nil, nil, false, fmt.Errorf("%s.allowed_ips[%d]: %w", pp, i, err)
			}
			want = append(want, pfx.String())
		}
		sort.Strings(want)
		want = slices.Compact(want)
		have := make([]string, 0, len(lp.AllowedIPs))
		for _, a := range lp.AllowedIPs {
			if pfx, err := ParseAllowedIP(a); err == nil {
				have = append(have, pfx.String())
			}
		}
		sort.Strings(have)
		if isNew || !slices.Equal(want, have) {
			po.AllowedIPs = want
			if !isNew || len(want) > 0 {
				changes = append(changes, plugin.Change{Path: pp + ".allowed_ips", Current: listOrNil(isNew, have), Desired: want})
			}
		}
	}
	secs, set, err := Keepalive(dp.PersistentKeepalive)
	if err != nil {
		return nil, nil, false, fmt.Errorf("%s.persistent_keepalive: %w", pp, err)
	}
	if set {
		curSecs, _, _ := Keepalive(lp.PersistentKeepalive)
		if isNew || secs != curSecs {
			po.Keepalive = &secs
			if !isNew || secs != 0 {
				changes = append(changes, plugin.Change{Path: pp + ".persistent_keepalive", Current: keepaliveShown(isNew, curSecs), Desired: secs})
			}
		}
	}
	if f := dp.PresharedKeyFile; f != "" {
		kf, ok := files[f]
		if !ok {
			return nil, nil, false, fmt.Errorf("%s.preshared_key_file: %s was not read before planning (plan needs the live state from QueryFor)", pp, f)
		}
		if !lp.HasPresharedKey || kf.digest != lp.pskDigest {
			po.PresharedKeyFile = f
			cur := "(none)"
			if lp.HasPresharedKey {
				cur = "(another key)"
			}
			// Neither key is shown; the file is named.
			changes = append(changes, plugin.Change{Path: pp + ".preshared_key_file", Current: cur, Desired: "(the key in " + f + ")"})
			if !isNew {
				reversible = false
			}
		}
	}
	if isNew {
		// A new peer is one change, shown with what it is given.
		summary := map[string]any{}
		if po.Endpoint != "" {
			summary["endpoint"] = po.Endpoint
		}
		if po.AllowedIPs != nil {
			summary["allowed_ips"] = po.AllowedIPs
		}
		if po.Keepalive != nil {
			summary["persistent_keepalive"] = *po.Keepalive
		}
		if po.PresharedKeyFile != "" {
			summary["preshared_key_file"] = po.PresharedKeyFile
		}
		return po, []plugin.Change{{Path: pp, Current: nil, Desired: summary}}, true, nil
	}
	if len(changes) == 0 {
		return nil, nil, true, nil
	}
	return po, changes, reversible, nil
}

func orNil[T comparable](v T) any {
	var zero T
	if v == zero {
		return nil
	}
	return v
}

func listOrNil(isNew bool, l []string) any {
	if isNew {
		return nil
	}
	return l
}

func keepaliveShown(isNew bool, secs int) any {
	if isNew {
		return nil
	}
	return secs
}

// Subset implements plugin.Plugin: the interfaces among items
// ("interfaces/NAME") as they were, with replace_peers so that rollback
// also removes peers the transaction added. Private and preshared keys are
// not in the state and cannot be restored (ops changing them are marked
// irreversible); an interface the transaction created is left.
func (p *Plugin) Subset(st any, items []string) any {
	s, _ := st.(*State)
	out := &State{Interfaces: map[string]*Interface{}}
	if s == nil {
		return out
	}
	for _, it := range items {
		name, ok := strings.CutPrefix(it, "interfaces/")
		if !ok {
			continue
		}
		ifc := s.Interfaces[name]
		if ifc == nil {
			continue
		}
		cp := &Interface{ListenPort: ifc.ListenPort, ReplacePeers: true, Peers: map[string]*Peer{}}
		if ifc.FirewallMark != nil {
			fw := *ifc.FirewallMark
			cp.FirewallMark = &fw
		}
		for pk, lp := range ifc.Peers {
			if lp == nil {
				continue
			}
			cp.Peers[pk] = &Peer{
				Endpoint:            lp.Endpoint,
				AllowedIPs:          append([]string{}, lp.AllowedIPs...),
				PersistentKeepalive: lp.PersistentKeepalive,
			}
		}
		out.Interfaces[name] = cp
	}
	return out
}
