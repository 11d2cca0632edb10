package nixos

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"
)

func TestExecArgs(t *testing.T) {
	for _, c := range []struct {
		line string
		want []string
	}{
		{`/bin/x a  b`, []string{"/bin/x", "a", "b"}},
		{`"/bin/x" "a b" 'c d' e\sf`, []string{"/bin/x", "a b", "c d", "e f"}},
		{`/bin/x "50%%" "$$HOME" "q\"q" "\u00fc\t" x"y z"w`, []string{"/bin/x", "50%", "$HOME", `q"q`, "ü\t", "xy zw"}},
		{`/bin/x ""`, []string{"/bin/x", ""}},
	} {
		got, err := ExecArgs(c.line)
		if err != nil || !slices.Equal(got, c.want) {
			t.Errorf("ExecArgs(%s) = %q, %v; want %q", c.line, got, err, c.want)
		}
	}
	for _, bad := range []string{``, `  `, `/bin/x %n`, `/bin/x $HOME`, `/bin/x ${A}`, `/bin/x "open`, `-/bin/x`, `""`, `/bin/x \q`, `/bin/x a\`} {
		if got, err := ExecArgs(bad); err == nil {
			t.Errorf("ExecArgs(%s) = %q, want an error", bad, got)
		}
	}
}

func TestRenderUnitFile(t *testing.T) {
	var svc SystemdService
	in := `{"description":"d","after":["a.service","b.target"],"wants":[],"wantedBy":["multi-user.target"],
	  "restartTriggers":["/nix/store/x"],"environment":{"B":"2 3","A":"1"},"unitConfig":{"StartLimitBurst":5},
	  "serviceConfig":{"Type":"notify","ProtectHome":true,"Private":false,"List":["x","y"],"Empty":[],"Null":null,"Blank":""}}`
	if err := json.NewDecoder(strings.NewReader(in)).Decode(&svc); err != nil {
		t.Fatal(err)
	}
	got, err := RenderUnitFile(svc)
	if err != nil {
		t.Fatal(err)
	}
	want := `[Unit]
After=a.service b.target
Description=d
StartLimitBurst=5
X-Restart-Triggers=/nix/store/x

[Service]
Environment="A=1"
Environment="B=2 3"
Blank=
List=x
List=y
Private=false
ProtectHome=true
Type=notify

[Install]
WantedBy=multi-user.target
`
	if got != want {
		t.Errorf("got\n%s\nwant\n%s", got, want)
	}
	svc.ServiceConfig["Bad"] = "a\nb"
	if _, err := RenderUnitFile(svc); err == nil {
		t.Error("a newline in a value was rendered")
	}
}
