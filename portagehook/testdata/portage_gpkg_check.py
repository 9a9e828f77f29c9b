"""Verify and unpack GPKGs with portage's own gpkg class (TestPortageAcceptsServedGPKG).

Usage: PORTAGE_LIB=<portage checkout>/lib GPG_HOME=<keyring> python3 portage_gpkg_check.py FILE...
Runs portage's gpkg.get_metadata() and gpkg.decompress() with
FEATURES=binpkg-request-signature, i.e. the checks a binrepo with
verify-signature = true applies, and prints one JSON object:
{path: {"ok": bool, "CPV": str, "files": [...], "error": str}}.
"""
import json, os, sys
sys.path.insert(0, os.environ["PORTAGE_LIB"])
from portage.tests.resolver.ResolverPlayground import ResolverPlayground
from portage.gpkg import gpkg
home = os.environ["GPG_HOME"]
pg = ResolverPlayground(user_config={"make.conf": ('BINPKG_FORMAT="xpak"', 'FEATURES="${FEATURES} binpkg-request-signature"', f'BINPKG_GPG_VERIFY_GPG_HOME="{home}"')})
try:
    s = pg.settings
    print("drop", s.get("GPG_VERIFY_USER_DROP"), "home", s.get("BINPKG_GPG_VERIFY_GPG_HOME"), file=sys.stderr)
    out = {}
    for path in sys.argv[1:]:
        try:
            p = gpkg(s, None, path)
            md = p.get_metadata()
            d = os.path.join(pg.eroot, "x", os.path.basename(path))
            p.decompress(d)
            files = sorted(os.path.relpath(os.path.join(r, f), d) for r, ds, fs in os.walk(d) for f in fs + ds)
            out[path] = {"ok": True, "CPV": md["CATEGORY"].decode().strip() + "/" + md["PF"].decode().strip(), "files": files}
        except Exception as e:
            out[path] = {"ok": False, "error": type(e).__name__ + ": " + str(e)}
    print(json.dumps(out))
finally:
    pg.cleanup()
