# gentoo-p2pd: tell the local daemon about fresh binary packages, and
# about every source build and binary install, which it records as demand
# for the variant (FEATURES="binary_sharing"). Portage sources /etc/portage/bashrc in every
# phase and saves every function into the environment it packs into the
# binpkg; the functions below are defined in the postinst phase only, so
# nothing of this hook reaches environment.bz2 (which peers compare).
# The hook never fails a merge: every path returns 0, the daemon call is
# bounded by timeout(1), and its output goes to stderr.
if [[ ${EBUILD_PHASE} == postinst ]]; then

gentoo_p2pd_binary_sharing() {
	[[ " ${FEATURES} " == *" binary_sharing "* ]] || return 0
	local cmd=${GENTOO_P2PD_COMMAND:-gentoo-p2pd}
	type -P "${cmd}" >/dev/null 2>&1 || return 0
	type -P timeout >/dev/null 2>&1 || return 0
	local -a args
	local f="" c
	case ${MERGE_TYPE} in
		source)
			# The package phase ran before postinst: the binpkg is in
			# PKGDIR under one of portage's layouts.
			for c in \
				${BUILD_ID:+"${PKGDIR}/${CATEGORY}/${PN}/${PF}-${BUILD_ID}.gpkg.tar"} \
				${BUILD_ID:+"${PKGDIR}/${CATEGORY}/${PN}/${PF}-${BUILD_ID}.xpak"} \
				"${PKGDIR}/${CATEGORY}/${PF}.gpkg.tar" \
				"${PKGDIR}/${CATEGORY}/${PF}.tbz2"
			do
				if [[ -f ${c} ]]; then
					f=${c}
					break
				fi
			done
			if [[ -n ${f} ]]; then
				args=(announce --timeout 2s "${f}")
			else
				# Unknown layout, or no binpkg (no buildpkg): the daemon
				# rescans PKGDIR for it, and without one still records
				# demand for the variant from the vdb entry.
				args=(announce --timeout 2s "${CATEGORY}/${PF}")
			fi
			;;
		binary)
			args=(announce --timeout 2s --installed "${CATEGORY}/${PF}")
			;;
		*)
			return 0
			;;
	esac
	# setup-portage records the socket of the user's daemon: portage runs
	# this hook as root, whose own default socket path differs.
	if [[ -n ${gentoo_p2pd_socket} ]]; then
		GENTOO_P2PD_API_SOCKET=${gentoo_p2pd_socket} timeout -k 1 3 "${cmd}" "${args[@]}" </dev/null >&2 || true
	else
		timeout -k 1 3 "${cmd}" "${args[@]}" </dev/null >&2 || true
	fi
	return 0
}

# Compose with a post_pkg_postinst defined earlier (a user's own hook):
# keep it, run it first, keep its exit status. Re-sourcing is idempotent.
if declare -F post_pkg_postinst >/dev/null; then
	if [[ $(declare -f post_pkg_postinst) != *gentoo_p2pd_binary_sharing* ]]; then
		gentoo_p2pd_prev=$(declare -f post_pkg_postinst)
		eval "gentoo_p2pd_chained_post_pkg_postinst ${gentoo_p2pd_prev#post_pkg_postinst }"
		unset gentoo_p2pd_prev
		post_pkg_postinst() {
			gentoo_p2pd_chained_post_pkg_postinst "$@"
			local ret=$?
			gentoo_p2pd_binary_sharing
			return ${ret}
		}
	fi
else
	post_pkg_postinst() {
		gentoo_p2pd_binary_sharing
	}
fi

fi
