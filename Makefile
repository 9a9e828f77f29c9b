# Build, test and install gentoo-p2pd. `make install DESTDIR=/tmp/root`
# lays out what a distribution package ships.
PREFIX  ?= /usr/local
BINDIR  ?= $(PREFIX)/bin
DOCDIR  ?= $(PREFIX)/share/doc/gentoo-p2pd
SYSTEMD_SYSTEM ?= $(PREFIX)/lib/systemd/system
SYSTEMD_USER   ?= $(PREFIX)/lib/systemd/user
SYSCONFDIR ?= /etc
GO      ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
BINARY  ?= gentoo-p2pd

.PHONY: all build test install install-files clean

all: build

build:
	$(GO) build -trimpath -ldflags "-X main.version=$(VERSION)" -o $(BINARY) ./cmd/gentoo-p2pd

test:
	$(GO) test -race -count=1 ./...

# install-files installs an already built binary (the ebuild builds with ego).
install-files:
	install -Dm0755 $(BINARY) $(DESTDIR)$(BINDIR)/gentoo-p2pd
	install -Dm0644 packaging/systemd/user/gentoo-p2pd.service $(DESTDIR)$(SYSTEMD_USER)/gentoo-p2pd.service
	install -Dm0644 packaging/systemd/system/gentoo-p2pd.service $(DESTDIR)$(SYSTEMD_SYSTEM)/gentoo-p2pd.service
	install -Dm0755 packaging/openrc/gentoo-p2pd.initd $(DESTDIR)$(SYSCONFDIR)/init.d/gentoo-p2pd
	install -Dm0644 packaging/openrc/gentoo-p2pd.confd $(DESTDIR)$(SYSCONFDIR)/conf.d/gentoo-p2pd
	install -d $(DESTDIR)$(DOCDIR)
	install -m0644 README.md BENCHMARKS.md docs/*.md $(DESTDIR)$(DOCDIR)/

install: build install-files

clean:
	rm -f $(BINARY)
