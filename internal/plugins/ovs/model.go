package ovs

import (
	"github.com/ovn-kubernetes/libovsdb/model"
)

// The libovsdb models: only the columns the plugin reads. libovsdb checks
// them against the server's schema when it connects.

const dbName = "Open_vSwitch"

type rootRow struct {
	UUID       string   `ovsdb:"_uuid"`
	Bridges    []string `ovsdb:"bridges"`
	NextCfg    int      `ovsdb:"next_cfg"`
	CurCfg     int      `ovsdb:"cur_cfg"`
	IfaceTypes []string `ovsdb:"iface_types"`
}

type bridgeRow struct {
	UUID         string            `ovsdb:"_uuid"`
	Name         string            `ovsdb:"name"`
	Ports        []string          `ovsdb:"ports"`
	FailMode     *string           `ovsdb:"fail_mode"`
	DatapathType string            `ovsdb:"datapath_type"`
	ExternalIDs  map[string]string `ovsdb:"external_ids"`
	OtherConfig  map[string]string `ovsdb:"other_config"`
}

type portRow struct {
	UUID        string            `ovsdb:"_uuid"`
	Name        string            `ovsdb:"name"`
	Interfaces  []string          `ovsdb:"interfaces"`
	Tag         *int              `ovsdb:"tag"`
	Trunks      []int             `ovsdb:"trunks"`
	ExternalIDs map[string]string `ovsdb:"external_ids"`
}

type ifaceRow struct {
	UUID        string            `ovsdb:"_uuid"`
	Name        string            `ovsdb:"name"`
	Type        string            `ovsdb:"type"`
	Options     map[string]string `ovsdb:"options"`
	MTURequest  *int              `ovsdb:"mtu_request"`
	ExternalIDs map[string]string `ovsdb:"external_ids"`
	OFPort      *int              `ovsdb:"ofport"`
	MTU         *int              `ovsdb:"mtu"`
	AdminState  *string           `ovsdb:"admin_state"`
	LinkState   *string           `ovsdb:"link_state"`
	Error       *string           `ovsdb:"error"`
}

const (
	tRoot   = "Open_vSwitch"
	tBridge = "Bridge"
	tPort   = "Port"
	tIface  = "Interface"
)

// columns each select reads (everything the models hold).
var columns = map[string][]string{
	tRoot:   {"_uuid", "bridges", "next_cfg", "cur_cfg", "iface_types"},
	tBridge: {"_uuid", "name", "ports", "fail_mode", "datapath_type", "external_ids", "other_config"},
	tPort:   {"_uuid", "name", "interfaces", "tag", "trunks", "external_ids"},
	tIface:  {"_uuid", "name", "type", "options", "mtu_request", "external_ids", "ofport", "mtu", "admin_state", "link_state", "error"},
}

func clientModel() (model.ClientDBModel, error) {
	return model.NewClientDBModel(dbName, map[string]model.Model{
		tRoot:   &rootRow{},
		tBridge: &bridgeRow{},
		tPort:   &portRow{},
		tIface:  &ifaceRow{},
	})
}
