"""Install packages from a binhost with real emerge (TestEmergeInstallsFromGateway).

Usage: PORTAGE_LIB=<portage checkout>/lib GPG_HOME=<keyring> BINHOST=<url>
       python3 portage_emerge_check.py ATOM...
Builds a throwaway portage configuration with portage's test playground,
adds a binrepos.conf entry for BINHOST with verify-signature = true and
BINPKG_GPG_VERIFY_GPG_HOME=GPG_HOME, runs
`emerge --oneshot --getbinpkgonly ATOM...` and prints one JSON object:
{"returncode": int, "eprefix": str, "eroot": str, "installed": [...], "output": str}.
The caller removes eprefix.
"""
import json
import os
import subprocess
import sys

sys.path.insert(0, os.environ["PORTAGE_LIB"])

import portage  # noqa: E402
from portage.const import PORTAGE_PYM_PATH, USER_CONFIG_PATH  # noqa: E402
from portage.tests.resolver.ResolverPlayground import ResolverPlayground  # noqa: E402

home, url, atoms = os.environ["GPG_HOME"], os.environ["BINHOST"], sys.argv[1:]
pg = ResolverPlayground(
    user_config={
        "make.conf": (
            'BINPKG_FORMAT="xpak"',
            'ACCEPT_KEYWORDS="amd64"',
            'CHOST="x86_64-pc-linux-gnu"',
            f'BINPKG_GPG_VERIFY_GPG_HOME="{home}"',
            'PORTAGE_TRUST_HELPER=""',
        ),
        "binrepos.conf": (
            "[gentoo-p2pd]",
            "priority = 10",
            f"sync-uri = {url}",
            "verify-signature = true",
        ),
    },
)
s = pg.settings
eprefix, eroot = s["EPREFIX"], s["EROOT"]
fake_bin = os.path.join(eprefix, "bin")
for d in (fake_bin, os.path.join(eprefix, "var", "tmp", "portage"),
          os.path.join(eprefix, USER_CONFIG_PATH), os.path.join(eprefix, "var", "cache", "edb")):
    os.makedirs(d, exist_ok=True)
for x in ("chown", "chgrp"):
    os.symlink(portage.process.find_binary("true"), os.path.join(fake_bin, x))
with open(os.path.join(eprefix, "var", "cache", "edb", "counter"), "wb") as f:
    f.write(b"100")
env = {
    "PORTAGE_OVERRIDE_EPREFIX": eprefix,
    "PATH": fake_bin + ":" + s.get("PATH", os.environ["PATH"]),
    "PORTAGE_PYTHON": portage._python_interpreter,
    "PORTAGE_REPOSITORIES": s.repositories.config_string(),
    "PYTHONPATH": PORTAGE_PYM_PATH,
    "PORTAGE_INST_GID": str(os.getgid()),
    "PORTAGE_INST_UID": str(os.getuid()),
    "HOME": os.environ.get("HOME", "/root"),
}
emerge = os.path.join(os.path.dirname(PORTAGE_PYM_PATH), "bin", "emerge")
proc = subprocess.run(
    [portage._python_interpreter, "-b", emerge, "--oneshot", "--getbinpkgonly", "--verbose", *atoms],
    env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
)
vdb = os.path.join(eroot, "var", "db", "pkg")
installed = sorted(
    f"{c}/{p}" for c in (os.listdir(vdb) if os.path.isdir(vdb) else []) for p in os.listdir(os.path.join(vdb, c))
)
print(json.dumps({"returncode": proc.returncode, "eprefix": eprefix, "eroot": eroot, "installed": installed,
                  "output": proc.stdout.decode("utf-8", "replace")}))
