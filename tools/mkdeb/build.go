package main

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/goreleaser/nfpm/v2"
	_ "github.com/goreleaser/nfpm/v2/deb" // registers the deb packager
	"github.com/goreleaser/nfpm/v2/files"
	"github.com/spf13/cobra/doc"

	"github.com/op-dbus/op-dbus/internal/cli"
)

const (
	defaultMaintainer = "op-dbus maintainers <maintainers@op-dbus.invalid>"
	homepage          = "https://github.com/op-dbus/op-dbus"
)

// Options say what to package and where to put it.
type Options struct {
	Repo       string // repository root; "" means the git top level of the working directory
	Binary     string // the op-dbus binary
	Out        string // output directory
	Version    string // Debian version; "" means from git
	Maintainer string
}

// An entry is one file of the package.
type entry struct {
	src, dst string
	mode     os.FileMode
	conffile bool
}

// Build writes the package into o.Out and returns its path.
func Build(o Options) (string, error) {
	if o.Repo == "" {
		out, err := exec.Command("git", "rev-parse", "--show-toplevel").Output()
		if err != nil {
			return "", fmt.Errorf("finding the repository (pass -repo): %w", err)
		}
		o.Repo = strings.TrimSpace(string(out))
	}
	if o.Maintainer == "" {
		o.Maintainer = defaultMaintainer
	}
	if o.Out == "" {
		o.Out = "."
	}
	if o.Version == "" {
		v, err := DebVersion(o.Repo)
		if err != nil {
			return "", err
		}
		o.Version = v
	}
	if !validDebVersion(o.Version) {
		return "", fmt.Errorf("%q is not a valid Debian version", o.Version)
	}
	bin, err := filepath.Abs(o.Binary)
	if err != nil {
		return "", err
	}
	mtime := commitTime(o.Repo)

	stage, err := os.MkdirTemp("", "mkdeb-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(stage)

	dist := func(p string) string { return filepath.Join(o.Repo, "dist", p) }
	entries := []entry{
		{bin, "/usr/bin/op-dbus", 0o755, false},
		{dist("op-dbus.service"), "/lib/systemd/system/op-dbus.service", 0o644, false},
		{dist("org.opdbus1.conf"), "/usr/share/dbus-1/system.d/org.opdbus1.conf", 0o644, false},
		{dist("deb/state.yaml"), "/etc/op-dbus/state.yaml", 0o644, true},
		{dist("deb/lintian-overrides"), "/usr/share/lintian/overrides/op-dbus", 0o644, false},
	}
	docs, err := docFiles(filepath.Join(stage, "doc"), o.Repo, o.Version, o.Maintainer, mtime)
	if err != nil {
		return "", err
	}
	entries = append(entries, docs...)
	man, err := manPages(filepath.Join(stage, "man"), o.Version, mtime)
	if err != nil {
		return "", err
	}
	entries = append(entries, man...)
	comp, err := completions(bin, filepath.Join(stage, "completion"))
	if err != nil {
		return "", err
	}
	entries = append(entries, comp...)

	var contents files.Contents
	for _, e := range entries {
		c := &files.Content{Source: e.src, Destination: e.dst,
			FileInfo: &files.ContentFileInfo{Mode: e.mode, Owner: "root", Group: "root", MTime: mtime}}
		if e.conffile {
			c.Type = files.TypeConfig
		}
		contents = append(contents, c)
	}

	info := &nfpm.Info{
		Name:          "op-dbus",
		Arch:          "amd64",
		Platform:      "linux",
		Version:       o.Version,
		VersionSchema: "none",
		Section:       "admin",
		Priority:      "optional",
		Maintainer:    o.Maintainer,
		Homepage:      homepage,
		MTime:         mtime,
		Description: `declarative host state over D-Bus, with plan, verify and rollback
op-dbus treats a Linux host as one declarative state document. It reads
the live state through native interfaces (systemd, hostname1, timedate1,
locale1 and NetworkManager over D-Bus, netlink, OVSDB, WireGuard), shows
what would change, applies it in order, verifies the result and rolls back
on failure, recording every change in a tamper-evident audit log.
.
The package ships the op-dbus command, its D-Bus policy and a drift daemon
(op-dbus.service) that runs in report mode with a default state document
that manages nothing.`,
		Overridables: nfpm.Overridables{
			Depends:    []string{"dbus"},
			Recommends: []string{"systemd"},
			Contents:   contents,
			Scripts: nfpm.Scripts{
				PostInstall: dist("deb/postinst"),
				PreRemove:   dist("deb/prerm"),
				PostRemove:  dist("deb/postrm"),
			},
		},
	}
	info = nfpm.WithDefaults(info)
	if err := nfpm.PrepareForPackager(info, "deb"); err != nil {
		return "", fmt.Errorf("preparing the package: %w", err)
	}
	pkg, err := nfpm.Get("deb")
	if err != nil {
		return "", err
	}
	if err := os.MkdirAll(o.Out, 0o755); err != nil {
		return "", err
	}
	path := filepath.Join(o.Out, pkg.ConventionalFileName(info))
	f, err := os.Create(path)
	if err != nil {
		return "", err
	}
	if err := pkg.Package(info, f); err != nil {
		f.Close()
		os.Remove(path)
		return "", fmt.Errorf("writing %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return "", err
	}
	return path, nil
}

// docFiles writes /usr/share/doc/op-dbus/{copyright,changelog.gz}: a
// native package's changelog (one entry, for the commit it was built from)
// and a copyright file that says what the repository declares.
func docFiles(dir, repo, version, maintainer string, date time.Time) ([]entry, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	commit, _ := exec.Command("git", "-C", repo, "rev-parse", "HEAD").Output()
	changelog := fmt.Sprintf("op-dbus (%s) unstable; urgency=medium\n\n  * Built from commit %s.\n\n -- %s  %s\n",
		version, strings.TrimSpace(string(commit)), maintainer, date.Format("Mon, 02 Jan 2006 15:04:05 -0700"))
	copyright := "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n" +
		"Upstream-Name: op-dbus\nSource: " + homepage + "\n" +
		"Comment: The project has not declared a licence yet; until it does, no\n" +
		" licence is granted beyond what the copyright holders allow.\n\n" +
		"Files: *\nCopyright: " + date.Format("2006") + " the op-dbus authors\nLicense: undeclared\n" +
		" The repository contains no licence file yet.\n"
	cl := filepath.Join(dir, "changelog")
	if err := os.WriteFile(cl, []byte(changelog), 0o644); err != nil {
		return nil, err
	}
	gz, err := gzipFile(cl)
	if err != nil {
		return nil, err
	}
	cp := filepath.Join(dir, "copyright")
	if err := os.WriteFile(cp, []byte(copyright), 0o644); err != nil {
		return nil, err
	}
	return []entry{
		{gz, "/usr/share/doc/op-dbus/changelog.gz", 0o644, false},
		{cp, "/usr/share/doc/op-dbus/copyright", 0o644, false},
	}, nil
}

// manPages writes one gzipped man page per command into dir.
func manPages(dir, version string, date time.Time) ([]entry, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	root := cli.Command()
	root.InitDefaultCompletionCmd()
	root.DisableAutoGenTag = true
	hdr := &doc.GenManHeader{Title: "OP-DBUS", Section: "1", Source: "op-dbus " + version, Manual: "op-dbus manual", Date: &date}
	if err := doc.GenManTree(root, hdr, dir); err != nil {
		return nil, fmt.Errorf("man pages: %w", err)
	}
	names, err := filepath.Glob(filepath.Join(dir, "*.1"))
	if err != nil || len(names) == 0 {
		return nil, fmt.Errorf("man pages: none generated in %s", dir)
	}
	var out []entry
	for _, n := range names {
		gz, err := gzipFile(n)
		if err != nil {
			return nil, err
		}
		out = append(out, entry{gz, "/usr/share/man/man1/" + filepath.Base(gz), 0o644, false})
	}
	return out, nil
}

// gzipFile writes p.gz the way gzip -9n does (no name, no time stamp).
func gzipFile(p string) (string, error) {
	b, err := os.ReadFile(p)
	if err != nil {
		return "", err
	}
	var buf bytes.Buffer
	w, _ := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	if _, err := w.Write(b); err != nil {
		return "", err
	}
	if err := w.Close(); err != nil {
		return "", err
	}
	return p + ".gz", os.WriteFile(p+".gz", buf.Bytes(), 0o644)
}

// completions runs the binary's own `completion` command for each shell.
func completions(bin, dir string) ([]entry, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	shells := []struct{ shell, dst string }{
		{"bash", "/usr/share/bash-completion/completions/op-dbus"},
		{"zsh", "/usr/share/zsh/vendor-completions/_op-dbus"},
		{"fish", "/usr/share/fish/vendor_completions.d/op-dbus.fish"},
	}
	var out []entry
	for _, s := range shells {
		var stderr bytes.Buffer
		cmd := exec.Command(bin, "completion", s.shell)
		cmd.Stderr = &stderr
		b, err := cmd.Output()
		if err != nil {
			return nil, fmt.Errorf("%s completion %s: %v: %s", bin, s.shell, err, stderr.String())
		}
		p := filepath.Join(dir, s.shell)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			return nil, err
		}
		out = append(out, entry{p, s.dst, 0o644, false})
	}
	return out, nil
}

var describeRE = regexp.MustCompile(`^v?([0-9][0-9A-Za-z.+~]*)-([0-9]+)-g([0-9a-f]+)$`)

// DebVersion derives a Debian version from git: the newest tag vX.Y.Z
// gives X.Y.Z (exactly on the tag) or X.Y.Z+gitN.HASH (N commits after
// it); without a tag, 0.0.0~gitN.HASH with N the number of commits, so
// that any later tagged release sorts above it.
func DebVersion(repo string) (string, error) {
	git := func(args ...string) (string, error) {
		out, err := exec.Command("git", append([]string{"-C", repo}, args...)...).Output()
		return strings.TrimSpace(string(out)), err
	}
	if d, err := git("describe", "--tags", "--long", "--match", "v[0-9]*"); err == nil {
		if m := describeRE.FindStringSubmatch(d); m != nil {
			if m[2] == "0" {
				return m[1], nil
			}
			return m[1] + "+git" + m[2] + "." + m[3], nil
		}
	}
	n, err := git("rev-list", "--count", "HEAD")
	if err != nil {
		return "", fmt.Errorf("git rev-list in %s: %w", repo, err)
	}
	h, err := git("rev-parse", "--short=7", "HEAD")
	if err != nil {
		return "", fmt.Errorf("git rev-parse in %s: %w", repo, err)
	}
	return "0.0.0~git" + n + "." + h, nil
}

var debVersionRE = regexp.MustCompile(`^([0-9]+:)?[0-9][A-Za-z0-9.+~-]*$`)

func validDebVersion(v string) bool {
	return debVersionRE.MatchString(v) && !strings.HasSuffix(v, "-")
}

// commitTime is the time of HEAD (for reproducible time stamps), or now.
func commitTime(repo string) time.Time {
	out, err := exec.Command("git", "-C", repo, "log", "-1", "--format=%ct").Output()
	if err == nil {
		if s, err := strconv.ParseInt(strings.TrimSpace(string(out)), 10, 64); err == nil {
			return time.Unix(s, 0).UTC()
		}
	}
	return time.Now().UTC()
}
