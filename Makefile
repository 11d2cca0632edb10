# op-dbus: the two commands a fresh Debian machine needs are `make demo` and
# `make test` (both as root; both install what they need).

GO        ?= go
BIN       := bin/op-dbus
VERSION   ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS   := -X github.com/op-dbus/op-dbus/internal/cli.Version=$(VERSION)
# Debian packages the test bed runs: real dbus-daemon, systemd (user manager,
# hostnamed, timedated, localed), util-linux (unshare, nsenter).
DEB_PKGS  := man-db lintian procps busybox dbus dbus-bin dbus-daemon dbus-user-session systemd util-linux mount iproute2 tzdata locales btrfs-progs libglib2.0-bin nix-bin openvswitch-switch openvswitch-common network-manager wireguard-tools mmdebstrap systemd-container

.PHONY: all build deps interop-deps test check fmt vet unit bench demo fuzz clean deb deb-test

all: build

build:
	$(GO) build -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/op-dbus

# Install the Debian packages the test bed needs (skipped when present).
deps:
	@missing=""; for p in $(DEB_PKGS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi

# The Debian package: a static, stripped binary with the same version stamp,
# packaged by tools/mkdeb (its own Go module, so nfpm is no dependency of
# op-dbus). Writes bin/op-dbus_VERSION_amd64.deb.
deb:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '-s -w $(LDFLAGS)' -o bin/deb/op-dbus ./cmd/op-dbus
	cd tools/mkdeb && $(GO) run . -repo ../.. -binary ../../bin/deb/op-dbus -o ../../bin

# The package's tests (dpkg-deb, man, bash -n, lintian when installed).
deb-test:
	cd tools/mkdeb && $(GO) vet ./... && $(GO) test -count=1 ./...

fmt:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet ./...

check: fmt vet

# Every test, against real daemons started by internal/testbed, with the race
# detector. CI=true makes a test that cannot start its daemon fail, not skip.
# The official TypeScript MCP SDK, for the MCP interoperability test.
interop-deps:
	@command -v npm >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm)
	cd test/mcp-interop && npm ci --no-audit --no-fund

test: deps interop-deps check
	$(GO) test -race -count=1 -timeout 25m ./...
	$(MAKE) deb-test

unit:
	$(GO) test -count=1 -short ./internal/state/ ./internal/engine/

bench: deps build
	$(GO) test -run '^$$' -bench . -benchtime 20x -count 1 ./internal/plugins/systemd/

fuzz:
	$(GO) test -run '^$$' -fuzz FuzzDecode -fuzztime 60s ./internal/state/

demo: deps build
	./scripts/demo.sh $(BIN)

clean:
	rm -rf bin
