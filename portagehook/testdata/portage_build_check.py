"""Build and reinstall a package with real emerge and the bashrc hook (TestBashrcHookInEmerge).

Usage: PORTAGE_LIB=<portage checkout>/lib HOOK_SNIPPET=<bashrc.sh> FAKE_DAEMON=<script>
       python3 portage_build_check.py
Builds a throwaway portage configuration with portage's test playground,
installs HOOK_SNIPPET as /etc/portage/bashrc and FAKE_DAEMON as
gentoo-p2pd on PATH, sets FEATURES="buildpkg binary_sharing
binpkg-multi-instance", then runs `emerge --oneshot dev-libs/A` (source
build, binpkg written) and `emerge --oneshot --usepkgonly dev-libs/A`
(binary reinstall). Prints one JSON object:
{"eprefix", "pkgdir", "returncodes": [..], "output": str}. The caller
removes eprefix.
"""
import json
import os
import shutil
import subprocess
import sys

sys.path.insert(0, os.environ["PORTAGE_LIB"])

import portage  # noqa: E402
from portage.const import PORTAGE_PYM_PATH, USER_CONFIG_PATH  # noqa: E402
from portage.tests.resolver.ResolverPlayground import ResolverPlayground  # noqa: E402

pg = ResolverPlayground(
    ebuilds={"dev-libs/A-1": {"EAPI": "8", "SLOT": "0"}},
    user_config={
        "make.conf": (
            'BINPKG_FORMAT="xpak"',
            'FEATURES="${FEATURES} buildpkg binary_sharing binpkg-multi-instance"',
        ),
    },
)
s = pg.settings
eprefix = s["EPREFIX"]
fake_bin = os.path.join(eprefix, "bin")
for d in (fake_bin, os.path.join(eprefix, "var", "tmp", "portage"),
          os.path.join(eprefix, USER_CONFIG_PATH), os.path.join(eprefix, "var", "cache", "edb")):
    os.makedirs(d, exist_ok=True)
for x in ("chown", "chgrp"):
    os.symlink(portage.process.find_binary("true"), os.path.join(fake_bin, x))
shutil.copy(os.environ["FAKE_DAEMON"], os.path.join(fake_bin, "gentoo-p2pd"))
os.chmod(os.path.join(fake_bin, "gentoo-p2pd"), 0o755)
shutil.copy(os.environ["HOOK_SNIPPET"], os.path.join(eprefix, USER_CONFIG_PATH, "bashrc"))
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
    "HOOK_LOG": os.environ["HOOK_LOG"],
}
emerge = os.path.join(os.path.dirname(PORTAGE_PYM_PATH), "bin", "emerge")
codes, output = [], ""
for args in (["--oneshot", "dev-libs/A"], ["--oneshot", "--usepkgonly", "dev-libs/A"]):
    proc = subprocess.run([portage._python_interpreter, "-b", emerge, *args], env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    codes.append(proc.returncode)
    output += proc.stdout.decode("utf-8", "replace")
print(json.dumps({"eprefix": eprefix, "pkgdir": s["PKGDIR"], "returncodes": codes, "output": output}))
