// Command mkdeb builds the op-dbus Debian package (.deb) with nfpm: the
// binary, the systemd unit, the D-Bus policy, a default state document that
// manages nothing, man pages generated from the cobra commands, shell
// completions from the binary's own `completion` command, and the
// maintainer scripts in dist/deb/.
//
// It is its own module so that nfpm and the man page generator never become
// dependencies of op-dbus itself. Run from the Makefile:
//
//	make deb
//
// or directly:
//
//	cd tools/mkdeb && go run . -repo ../.. -binary ../../bin/deb/op-dbus -o ../../bin
package main

import (
	"flag"
	"fmt"
	"os"
)

func main() {
	var o Options
	flag.StringVar(&o.Repo, "repo", "", "the op-dbus repository (default: the git top level of the working directory)")
	flag.StringVar(&o.Binary, "binary", "", "the op-dbus binary to package (built for linux/amd64, ideally with CGO_ENABLED=0)")
	flag.StringVar(&o.Out, "o", ".", "directory to write op-dbus_VERSION_amd64.deb into")
	flag.StringVar(&o.Version, "version", "", "Debian version (default: from git describe, e.g. 0.0.0~git179.7191642)")
	flag.StringVar(&o.Maintainer, "maintainer", defaultMaintainer, "the Maintainer field")
	flag.Parse()
	if o.Binary == "" {
		fmt.Fprintln(os.Stderr, "mkdeb: -binary is required")
		os.Exit(2)
	}
	path, err := Build(o)
	if err != nil {
		fmt.Fprintf(os.Stderr, "mkdeb: %v\n", err)
		os.Exit(1)
	}
	fmt.Println(path)
}
