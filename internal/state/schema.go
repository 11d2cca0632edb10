package state

import (
	"encoding/json"
	"maps"
	"slices"

	"github.com/invopop/jsonschema"
)

// Schema generates the JSON Schema of the whole document from the plugins'
// Go types, so the schema can never drift from what the decoder accepts.
func Schema(types Types) ([]byte, error) {
	r := &jsonschema.Reflector{
		DoNotReference:            true,
		AllowAdditionalProperties: false,
		ExpandedStruct:            true,
	}
	names := slices.Sorted(maps.Keys(types))
	plugins := jsonschema.NewProperties()
	for _, n := range names {
		s := r.Reflect(types[n]())
		s.Version = ""
		plugins.Set(n, s)
	}
	root := &jsonschema.Schema{
		Version:     "https://json-schema.org/draft/2020-12/schema",
		ID:          "https://op-dbus.dev/schema/state-v1.json",
		Title:       "op-dbus state document",
		Description: "What a Linux host should be. Partial: only what is named is managed.",
		Type:        "object",
		Required:    []string{"version"},
		Properties:  jsonschema.NewProperties(),
	}
	root.Properties.Set("version", &jsonschema.Schema{Const: Version, Description: "document format version"})
	root.Properties.Set("plugins", &jsonschema.Schema{
		Type:                 "object",
		Properties:           plugins,
		AdditionalProperties: jsonschema.FalseSchema,
	})
	for _, kv := range [][2]string{
		{"errors", "plugins query could not read although available, with why (written by query; ignored on input)"},
		{"unavailable", "plugins whose service is absent on the host, with why (written by query; ignored on input)"},
	} {
		root.Properties.Set(kv[0], &jsonschema.Schema{Type: "object", Description: kv[1],
			AdditionalProperties: &jsonschema.Schema{Type: "string"}})
	}
	root.AdditionalProperties = jsonschema.FalseSchema
	return json.MarshalIndent(root, "", "  ")
}
