package wireguard

import (
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/op-dbus/op-dbus/internal/state"
)

// State is the wireguard part of a state document.
//
// No secret is ever a field: private and preshared keys are named by the
// file that holds them, and query reports only what is public (the public
// key derived from the private key, whether a peer has a preshared key).
type State struct {
	// Interfaces maps an interface name (wg0) to what it should be.
	Interfaces map[string]*Interface `json:"interfaces,omitempty" jsonschema:"description=WireGuard interfaces by name (wg0). Interfaces not named here are left alone."`

	// files holds what QueryFor read from the key files the desired state
	// names, by path: the derived public key or a digest. Never marshalled.
	files map[string]keyFile
}

// Interface is one WireGuard interface. An absent field is not managed.
type Interface struct {
	PrivateKeyFile string `json:"private_key_file,omitempty" jsonschema:"description=Absolute path of a file holding the private key in base64 (as wg genkey writes it). The key itself never appears in a state document\\, plan or log. Query cannot know the file and leaves it out."`
	// PublicKey is read-only (reported by query, ignored by plan).
	PublicKey    string `json:"public_key,omitempty" jsonschema:"readOnly=true,description=read-only: the public key derived from the interface's private key"`
	ListenPort   int    `json:"listen_port,omitzero" jsonschema:"minimum=1,maximum=65535,description=UDP port to listen on"`
	FirewallMark *int   `json:"fwmark,omitempty" jsonschema:"minimum=0,maximum=4294967295,description=fwmark for outgoing packets; 0 turns it off"`
	ReplacePeers bool   `json:"replace_peers,omitempty" jsonschema:"description=Remove every peer not named in peers (like wg syncconf). Without it peers are removed only by state: absent."`
	// Peers maps a peer's public key (base64) to what it should be.
	Peers map[string]*Peer `json:"peers,omitempty" jsonschema:"description=Peers by public key (base64\\, 44 characters)"`
}

// Peer is one peer of an interface. An absent field is not managed.
type Peer struct {
	State               string   `json:"state,omitempty" jsonschema:"enum=present,enum=absent,description=absent removes the peer; present (the default) adds or updates it"`
	Endpoint            string   `json:"endpoint,omitempty" jsonschema:"description=IP:port of the peer ([v6]:port for IPv6); host names are not resolved"`
	AllowedIPs          []string `json:"allowed_ips,omitzero" jsonschema:"description=CIDRs routed to and accepted from this peer: exactly this set ([] for none)"`
	PersistentKeepalive any      `json:"persistent_keepalive,omitempty" jsonschema:"oneof_type=string;integer,description=Keepalive interval: seconds (25) or a duration (\"25s\"); 0 turns it off"`
	PresharedKeyFile    string   `json:"preshared_key_file,omitempty" jsonschema:"description=Absolute path of a file holding the preshared key in base64 (wg genpsk). Never reported by query."`

	// Read-only (reported by query, ignored by plan).
	HasPresharedKey bool `json:"has_preshared_key,omitempty" jsonschema:"readOnly=true,description=read-only: the peer has a preshared key (which is never shown)"`

	// pskDigest is SHA-256 of the live preshared key (set by query when
	// the peer has one), compared with a file's digest by plan.
	pskDigest [32]byte
}

// keyFile is what was read from a key file: never the key.
type keyFile struct {
	public string   // public key of a private key file
	digest [32]byte // SHA-256 of the key, for preshared keys
}

const keyHint = "expected 44 characters of base64 encoding 32 bytes, as `wg genkey` or `wg pubkey` write"

// ParseKey parses a base64 WireGuard key. The error never contains the
// text, which may be a secret.
func ParseKey(s string) (wgtypes.Key, error) {
	if len(s) != base64.StdEncoding.EncodedLen(wgtypes.KeyLen) {
		return wgtypes.Key{}, fmt.Errorf("not a WireGuard key: %d characters, %s", len(s), keyHint)
	}
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil || len(b) != wgtypes.KeyLen {
		return wgtypes.Key{}, errors.New("not a WireGuard key: invalid base64, " + keyHint)
	}
	return wgtypes.NewKey(b)
}

// maxKeyFile bounds what is read from a key file: a key is 44 bytes and a
// newline, whitespace aside.
const maxKeyFile = 4096

// ParseKeyFile parses the content of a key file: one base64 key, with
// surrounding whitespace allowed. Errors never quote the content.
func ParseKeyFile(b []byte) (wgtypes.Key, error) {
	if len(b) > maxKeyFile {
		return wgtypes.Key{}, fmt.Errorf("not a WireGuard key file: %d bytes, %s", len(b), keyHint)
	}
	s := strings.TrimSpace(string(b))
	if s == "" {
		return wgtypes.Key{}, errors.New("the file is empty; " + keyHint)
	}
	return ParseKey(s)
}

// ReadKeyFile reads and parses a key file. The error names the path and
// never the content.
func ReadKeyFile(path string) (wgtypes.Key, error) {
	if !filepath.IsAbs(path) {
		return wgtypes.Key{}, fmt.Errorf("%s: key file path must be absolute", path)
	}
	f, err := os.Open(path)
	if err != nil {
		return wgtypes.Key{}, fmt.Errorf("cannot read key file: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return wgtypes.Key{}, fmt.Errorf("cannot read key file: %w", err)
	}
	if !st.Mode().IsRegular() {
		return wgtypes.Key{}, fmt.Errorf("key file %s is not a regular file", path)
	}
	b, err := io.ReadAll(io.LimitReader(f, maxKeyFile+1))
	if err != nil {
		return wgtypes.Key{}, fmt.Errorf("cannot read key file %s: %w", path, err)
	}
	k, err := ParseKeyFile(b)
	clear(b)
	if err != nil {
		return wgtypes.Key{}, fmt.Errorf("key file %s: %w", path, err)
	}
	return k, nil
}

func digest(k wgtypes.Key) [32]byte { return sha256.Sum256(k[:]) }

// Keepalive returns the peer's persistent keepalive in whole seconds and
// whether it is set: a number of seconds or a Go duration string ("25s").
func Keepalive(v any) (int, bool, error) {
	var secs float64
	switch x := v.(type) {
	case nil:
		return 0, false, nil
	case float64:
		secs = x
	case int:
		secs = float64(x)
	case string:
		d, err := time.ParseDuration(x)
		if err != nil {
			return 0, false, fmt.Errorf("not a duration (use seconds like 25 or a duration like \"25s\"): %q", x)
		}
		if d%time.Second != 0 {
			return 0, false, fmt.Errorf("%q is not whole seconds (WireGuard counts keepalive in seconds)", x)
		}
		secs = d.Seconds()
	default:
		return 0, false, fmt.Errorf("expected seconds (25) or a duration (\"25s\"), got %T", v)
	}
	if secs != math.Trunc(secs) || math.IsNaN(secs) {
		return 0, false, fmt.Errorf("%v is not whole seconds", secs)
	}
	if secs < 0 || secs > 65535 {
		return 0, false, fmt.Errorf("%v seconds is out of range (0-65535; 0 turns keepalive off)", secs)
	}
	return int(secs), true, nil
}

// ValidInterfaceName follows the kernel's dev_valid_name.
func ValidInterfaceName(name string) error {
	switch {
	case name == "":
		return errors.New("empty interface name")
	case len(name) > 15:
		return fmt.Errorf("interface name is %d bytes; Linux allows at most 15", len(name))
	case name == "." || name == "..":
		return errors.New("interface name cannot be . or ..")
	case strings.ContainsRune(name, '/'):
		return errors.New("interface name cannot contain '/'")
	case strings.IndexFunc(name, func(r rune) bool { return r <= ' ' || r == ':' || r == 0x7f }) >= 0:
		return errors.New("interface name cannot contain whitespace, ':' or control characters")
	}
	return nil
}

// ParseEndpoint parses IP:port; host names are refused (resolving them
// would make plan depend on DNS).
func ParseEndpoint(s string) (netip.AddrPort, error) {
	ap, err := netip.ParseAddrPort(s)
	if err != nil {
		if host, _, herr := splitHostPort(s); herr == nil && host != "" {
			if _, aerr := netip.ParseAddr(host); aerr != nil {
				return netip.AddrPort{}, fmt.Errorf("endpoint %q: %q is not an IP address (host names are not resolved; give IP:port, [v6]:port for IPv6)", s, host)
			}
		}
		return netip.AddrPort{}, fmt.Errorf("endpoint %q is not IP:port ([v6]:port for IPv6)", s)
	}
	if ap.Port() == 0 {
		return netip.AddrPort{}, fmt.Errorf("endpoint %q: port 0 is not a port a peer listens on", s)
	}
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), nil
}

func splitHostPort(s string) (string, string, error) {
	i := strings.LastIndexByte(s, ':')
	if i < 0 {
		return "", "", errors.New("no port")
	}
	return strings.Trim(s[:i], "[]"), s[i+1:], nil
}

// ParseAllowedIP parses a CIDR; the host bits are masked as WireGuard does.
func ParseAllowedIP(s string) (netip.Prefix, error) {
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%q is not a CIDR (like 10.0.0.2/32 or fd00::/64)", s)
	}
	return p.Masked(), nil
}

// Validate implements plugin.Validator. It also reads the key files the
// state names (to report a missing, unreadable or malformed one before
// anything changes), but never reports their content.
func (p *Plugin) Validate(st any) state.Problems {
	s, _ := st.(*State)
	if s == nil {
		return nil
	}
	var ps state.Problems
	add := func(path, msg string) { ps = append(ps, state.Problem{Path: path, Msg: msg}) }
	checkFile := func(path, file string) {
		if !filepath.IsAbs(file) {
			add(path, fmt.Sprintf("%s: must be an absolute path", file))
			return
		}
		if _, err := ReadKeyFile(file); err != nil {
			add(path, err.Error())
		}
	}
	for _, name := range slices.Sorted(maps.Keys(s.Interfaces)) {
		ifc := s.Interfaces[name]
		path := "interfaces" + index(name)
		if err := ValidInterfaceName(name); err != nil {
			add(path, err.Error())
			continue
		}
		if ifc == nil {
			continue
		}
		if ifc.PrivateKeyFile != "" {
			checkFile(path+".private_key_file", ifc.PrivateKeyFile)
		}
		if ifc.PublicKey != "" {
			if _, err := ParseKey(ifc.PublicKey); err != nil {
				add(path+".public_key", err.Error())
			}
		}
		if ifc.ListenPort < 0 || ifc.ListenPort > 65535 {
			add(path+".listen_port", fmt.Sprintf("%d is out of range (1-65535)", ifc.ListenPort))
		}
		if ifc.FirewallMark != nil && (*ifc.FirewallMark < 0 || int64(*ifc.FirewallMark) > math.MaxUint32) {
			add(path+".fwmark", fmt.Sprintf("%d is out of range (0-4294967295)", *ifc.FirewallMark))
		}
		seen := map[wgtypes.Key]string{}
		for _, pk := range slices.Sorted(maps.Keys(ifc.Peers)) {
			peer := ifc.Peers[pk]
			pp := path + ".peers" + fmt.Sprintf("[%q]", pk)
			k, err := ParseKey(pk)
			if err != nil {
				add(pp, "peer "+err.Error())
				continue
			}
			if other, dup := seen[k]; dup {
				add(pp, fmt.Sprintf("the same public key as peers[%q]", other))
			}
			seen[k] = pk
			if peer == nil {
				continue
			}
			switch peer.State {
			case "", "present", "absent":
			default:
				add(pp+".state", fmt.Sprintf("must be \"present\" or \"absent\", got %q", peer.State))
			}
			if peer.Endpoint != "" {
				if _, err := ParseEndpoint(peer.Endpoint); err != nil {
					add(pp+".endpoint", err.Error())
				}
			}
			for i, a := range peer.AllowedIPs {
				if _, err := ParseAllowedIP(a); err != nil {
					add(fmt.Sprintf("%s.allowed_ips[%d]", pp, i), err.Error())
				}
			}
			if _, _, err := Keepalive(peer.PersistentKeepalive); err != nil {
				add(pp+".persistent_keepalive", err.Error())
			}
			if peer.PresharedKeyFile != "" {
				checkFile(pp+".preshared_key_file", peer.PresharedKeyFile)
			}
		}
	}
	return ps
}

// index renders a map key in a state path: .wg0, or ["odd name"].
func index(k string) string {
	ident := k != ""
	for i, r := range k {
		if !(r == '_' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || i > 0 && r >= '0' && r <= '9') {
			ident = false
			break
		}
	}
	if ident {
		return "." + k
	}
	return fmt.Sprintf("[%q]", k)
}
