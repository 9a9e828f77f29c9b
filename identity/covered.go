package identity

import (
	"slices"
	"strings"
)

// coveredKeys are the metadata keys the metadata digest v1 covers besides
// environment.bz2 and the *.ebuild keys. Everything here is either read by
// portage's resolver and merge code or is part of what the build was; none
// of it differs between honest builders of one build. Keys not listed
// (BUILD_TIME, BUILD_ID, SIZE, FEATURES, REPO_REVISIONS, MD5, SHA1, …) are
// not covered, and the gateway drops them before portage sees the package.
var coveredKeys = []string{
	"BDEPEND", "CATEGORY", "CBUILD", "CFLAGS", "CHOST", "CTARGET",
	"CXXFLAGS", "DEFINED_PHASES", "DEPEND", "DESCRIPTION", "EAPI",
	"EPREFIX", "FCFLAGS", "FFLAGS", "HOMEPAGE", "IDEPEND", "INHERITED",
	"IUSE", "IUSE_EFFECTIVE", "KEYWORDS", "LDFLAGS", "LICENSE", "NEEDED",
	"NEEDED.ELF.2", "PDEPEND", "PF", "PROPERTIES", "PROVIDES", "RDEPEND",
	"REQUIRED_USE", "REQUIRES", "RESTRICT", "SLOT", "USE", "repository",
}

// environmentKey is the metadata key holding the saved shell environment.
const environmentKey = "environment.bz2"

// CoveredKeys lists the fixed metadata keys the metadata digest covers,
// sorted; environment.bz2 and every key ending in ".ebuild" are covered too.
// Documentation and the gateway's tests use it.
func CoveredKeys() []string { return slices.Clone(coveredKeys) }

// IsCovered reports whether the metadata digest covers key. The gateway
// keeps exactly the covered keys of a package it serves and drops the rest,
// so nothing the digest leaves out can reach portage. environment.bz2 is
// covered only in its parsed form: the gateway must serve
// CanonicalEnvironment's output in its place, never the original bytes.
func IsCovered(key string) bool {
	if key == environmentKey || isEbuildKey(key) {
		return true
	}
	_, found := slices.BinarySearch(coveredKeys, key)
	return found
}

func isEbuildKey(key string) bool {
	return strings.HasSuffix(key, ".ebuild") && len(key) > len(".ebuild")
}

// hostVarying names the environment.bz2 variables that legitimately differ
// between honest builders of one build (the builder's paths, locale,
// terminal, parallelism, portage settings and features, binpkg format and
// compression). A trailing "*" matches any suffix. These variables are not
// covered by the metadata digest: the gateway strips them, so at install time
// the installing host's own values (or none) apply. Stripping, not trusting,
// is what keeps variables portage or bash would act on (PORTAGE_BASHRC, PATH,
// LD_PRELOAD-style settings under these names) out of an attacker's reach.
var hostVarying = []string{
	// Identity of the build run, not of the build.
	"BUILD_ID", "BUILD_TIME",
	// Binpkg format, compression and signing settings.
	"BINPKG_*", "GPG_VERIFY_*",
	// The builder's login environment.
	"COLORTERM", "COLUMNS", "DISPLAY", "EDITOR", "HOME", "HOSTNAME",
	"LANG", "LANGUAGE", "LC_*", "LESS", "LESSOPEN", "LINES", "LOGNAME",
	"LS_COLORS", "MAIL", "OLDPWD", "PAGER", "PWD", "SHLVL", "SSH_*",
	"TERM", "TERMCAP", "USER", "XDG_*", "ftp_proxy", "http_proxy",
	"https_proxy", "no_proxy", "SHELL", "SUDO_*", "MOTD_SHOWN", "GPG_TTY",
	"GPG_AGENT_INFO", "TZ", "DBUS_SESSION_BUS_ADDRESS", "XAUTHORITY",
	"WINDOW", "STY", "TMUX", "TMUX_PANE", "COLORFGBG", "VTE_VERSION",
	"WINDOWID", "KONSOLE_*", "TERM_PROGRAM*", "SESSION_MANAGER",
	"DESKTOP_SESSION", "GDMSESSION", "WAYLAND_DISPLAY",
	// Build parallelism and build-host tooling.
	"CCACHE_*", "DISTCC_*", "GNUMAKEFLAGS", "MAKEFLAGS", "MAKEOPTS",
	"NINJAOPTS", "PATH", "ROOTPATH", "PREROOTPATH",
	// Portage settings, features and paths.
	"ACCEPT_KEYWORDS", "ACCEPT_LICENSE", "CONFIG_PROTECT",
	"CONFIG_PROTECT_MASK", "DISTDIR", "EMERGE_*", "FEATURES", "GENTOO_MIRRORS",
	"PKGDIR", "PKG_LOGDIR", "PKG_TMPDIR", "PORTAGE_*", "PORTDIR",
	"PORTDIR_OVERLAY", "ECLASSDIR", "SANDBOX_*", "ACCEPT_CHOSTS",
	"ACCEPT_PROPERTIES", "ACCEPT_RESTRICT", "CLEAN_DELAY",
	"COLLISION_IGNORE", "EMERGE_WARNING_DELAY", "ENV_UNSET", "FETCHCOMMAND*",
	"RESUMECOMMAND*", "INSTALL_MASK", "PKG_INSTALL_MASK", "UNINSTALL_IGNORE",
	"USE_ORDER", "PROFILE_ONLY_VARIABLES",
	// Host settings portage imports from /etc/profile.env (env.d): they
	// depend on what else the builder has installed.
	"GCC_SPECS", "GSETTINGS_BACKEND", "INFODIR", "INFOPATH", "JAVAC",
	"JAVA_HOME", "JDK_HOME", "MANPAGER", "MANPATH", "PKG_CONFIG_PATH",
	// Per-build directories (readonly to ebuilds; portage re-sets them).
	"BROOT", "D", "EBUILD", "EBUILD_PHASE", "EBUILD_PHASE_FUNC", "ED",
	"EROOT", "ESYSROOT", "FILESDIR", "ROOT", "SYSROOT", "T", "TEMP", "TMP",
	"TMPDIR", "WORKDIR", "S", "MERGE_TYPE", "REPLACING_VERSIONS",
	"REPLACED_BY_VERSION", "PM_EBUILD_HOOK_DIR",
}

// HostVaryingVariables returns the names (a trailing "*" matches any suffix)
// of the environment.bz2 variables the metadata digest leaves out because
// honest builders differ in them. They are host-varying and not trusted:
// the gateway strips them from every environment it serves.
func HostVaryingVariables() []string {
	out := slices.Clone(hostVarying)
	slices.Sort(out)
	return out
}

// IsHostVarying reports whether environment variable name is on the
// HostVaryingVariables list.
func IsHostVarying(name string) bool {
	for _, p := range hostVarying {
		if prefix, ok := strings.CutSuffix(p, "*"); ok {
			if strings.HasPrefix(name, prefix) {
				return true
			}
		} else if name == p {
			return true
		}
	}
	return false
}
