#!/bin/bash
# Runs the binary_sharing hook as portage's ebuild.sh does in the postinst
# phase: the bashrc is sourced (twice here: once from the saved
# environment's point of view, once fresh, to prove re-sourcing composes),
# then __ebuild_phase calls post_pkg_postinst. Driven by TestBashrcHook.
#
# Environment: HOOK_SNIPPET (bashrc.sh), HOOK_LOG (file the fakes append
# to), HOOK_USER_STATUS (when set, a user's own post_pkg_postinst is defined
# first and returns it), plus portage's FEATURES, MERGE_TYPE, PKGDIR,
# CATEGORY, PN, PF, BUILD_ID.

if [[ -n ${HOOK_USER_STATUS} ]]; then
	post_pkg_postinst() {
		echo "user-hook" >>"${HOOK_LOG}"
		return "${HOOK_USER_STATUS}"
	}
fi

# Other phases must define nothing.
EBUILD_PHASE=install
source "${HOOK_SNIPPET}"
if declare -F gentoo_p2pd_binary_sharing >/dev/null; then
	echo "hook defined in the install phase" >&2
	exit 90
fi

EBUILD_PHASE=postinst
source "${HOOK_SNIPPET}"
source "${HOOK_SNIPPET}"

post_pkg_postinst
echo "rc=$?"
