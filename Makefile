# Build, test and install gentoo-p2pd. `make install DESTDIR=/tmp/root`
# lays out what a distribution package ships: the binary, the systemd
# units, the OpenRC service, shell completions, man pages and the docs.
PREFIX  ?= /usr/local
BINDIR  ?= $(PREFIX)/bin
DATADIR ?= $(PREFIX)/share
DOCDIR  ?= $(DATADIR)/doc/gentoo-p2pd
MANDIR  ?= $(DATADIR)/man
BASHCOMPDIR ?= $(DATADIR)/bash-completion/completions
ZSHCOMPDIR  ?= $(DATADIR)/zsh/site-functions
FISHCOMPDIR ?= $(DATADIR)/fish/vendor_completions.d
SYSTEMD_SYSTEM ?= $(PREFIX)/lib/systemd/system
SYSTEMD_USER   ?= $(PREFIX)/lib/systemd/user
SYSCONFDIR ?= /etc
GO      ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
BINARY  ?= gentoo-p2pd
# Completions and man pages are generated from the built binary into GENDIR.
GENDIR  ?= build

# The binary may be given as a bare name (run it from here) or a path.
RUN_BINARY = $(if $(findstring /,$(BINARY)),$(BINARY),./$(BINARY))

.PHONY: all build generate test install install-files clean

all: build

build:
	$(GO) build -trimpath -ldflags "-X main.version=$(VERSION)" -o $(BINARY) ./cmd/gentoo-p2pd

# generate writes the shell completions (cobra's `completion` command) and
# one man page per command (the hidden `man` command) from an already built
# binary; the ebuild runs it after building with ego.
generate:
	rm -rf $(GENDIR)/completions $(GENDIR)/man
	mkdir -p $(GENDIR)/completions $(GENDIR)/man
	$(RUN_BINARY) completion bash > $(GENDIR)/completions/gentoo-p2pd.bash
	$(RUN_BINARY) completion zsh > $(GENDIR)/completions/_gentoo-p2pd
	$(RUN_BINARY) completion fish > $(GENDIR)/completions/gentoo-p2pd.fish
	$(RUN_BINARY) man $(GENDIR)/man

test:
	$(GO) test -race -count=1 ./...

# install-files installs an already built binary and generated files.
install-files:
	install -Dm0755 $(BINARY) $(DESTDIR)$(BINDIR)/gentoo-p2pd
	install -Dm0755 packaging/gentoo-p2pd-build $(DESTDIR)$(BINDIR)/gentoo-p2pd-build
	install -Dm0644 packaging/systemd/user/gentoo-p2pd.service $(DESTDIR)$(SYSTEMD_USER)/gentoo-p2pd.service
	install -Dm0644 packaging/systemd/system/gentoo-p2pd.service $(DESTDIR)$(SYSTEMD_SYSTEM)/gentoo-p2pd.service
	install -Dm0755 packaging/openrc/gentoo-p2pd.initd $(DESTDIR)$(SYSCONFDIR)/init.d/gentoo-p2pd
	install -Dm0644 packaging/openrc/gentoo-p2pd.confd $(DESTDIR)$(SYSCONFDIR)/conf.d/gentoo-p2pd
	install -Dm0644 $(GENDIR)/completions/gentoo-p2pd.bash $(DESTDIR)$(BASHCOMPDIR)/gentoo-p2pd
	install -Dm0644 $(GENDIR)/completions/_gentoo-p2pd $(DESTDIR)$(ZSHCOMPDIR)/_gentoo-p2pd
	install -Dm0644 $(GENDIR)/completions/gentoo-p2pd.fish $(DESTDIR)$(FISHCOMPDIR)/gentoo-p2pd.fish
	install -d $(DESTDIR)$(MANDIR)/man1
	install -m0644 $(GENDIR)/man/*.1 $(DESTDIR)$(MANDIR)/man1/
	install -d $(DESTDIR)$(DOCDIR)
	install -m0644 README.md BENCHMARKS.md docs/*.md $(DESTDIR)$(DOCDIR)/

install: build
	$(MAKE) generate
	$(MAKE) install-files

clean:
	rm -f $(BINARY)
	rm -rf $(GENDIR)
