#!/bin/bash
# Generates builder-a.env and builder-b.env: what bash's `declare -p NAMES…;
# declare -fp` (portage's __save_ebuild_env after its readonly/bash-variable
# filter) writes for one ebuild built on two differently configured hosts.
# Unlike the scrubbed portage fixtures they carry the builder's own
# environment, arrays, associative arrays, multi-line and $'…' values, a
# here-document, a "}" line inside a string and an exported function.
# Run: bash generate.sh (bash 5.2 wrote the committed files).
set -eu
gen() {
	env -i HOME="$1" PATH="$2" LANG="$3" TERM="$4" bash --norc --noprofile -c '
		export MAKEOPTS="$5" PORTAGE_TMPDIR="$6" PWD="$6/portage/app-misc/hello-1.0/work" OLDPWD="/"
		export SHLVL=2 LC_ALL="$3" PORTAGE_BASHRC=/etc/portage/bashrc FEATURES="sandbox $7"
		export EMERGE_DEFAULT_OPTS="--jobs=$8" BINPKG_FORMAT=gpkg BUILD_ID=$8 BUILD_TIME=17952$8
		export T="$6/portage/app-misc/hello-1.0/temp" WORKDIR="$6/portage/app-misc/hello-1.0/work"
		export CATEGORY=app-misc PF=hello-1.0 CFLAGS="-O2 -pipe" USE="amd64 bar"
		declare -a PYTHON_COMPAT=(python3_12 python3_13)
		declare -A MY_MAP=([plain]=1 ["with space"]="two words" [quote]="a\"b")
		DOC_CONTENTS="Please run
	emerge --config ${CATEGORY}/${PF}
}
to finish the setup; it costs \$5 and \`nothing\`."
		CTRL=$'"'"'tab\there\x01end'"'"'
		declare -i COUNT=42
		declare -r FROZEN="ice"
		pkg_postinst() {
			elog "${DOC_CONTENTS}"
			cat > "${T}"/note <<-EOF || die
			}
			done
			EOF
			local x
			for x in "${PYTHON_COMPAT[@]}"; do
				echo "${x}" | tr a-z A-Z
			done
		}
		pkg_config() { einfo "configuring ${PF}"; }
		helper() { echo "helper $*"; }
		export -f helper
		declare -p BINPKG_FORMAT BUILD_ID BUILD_TIME CATEGORY CFLAGS COUNT CTRL DOC_CONTENTS \
			EMERGE_DEFAULT_OPTS FEATURES FROZEN HOME LANG LC_ALL MAKEOPTS MY_MAP OLDPWD PATH PF \
			PORTAGE_BASHRC PORTAGE_TMPDIR PWD PYTHON_COMPAT SHLVL T TERM USE WORKDIR
		declare -fp
	' gen "$@"
}
gen /root /usr/lib/ccache/bin:/usr/bin:/bin C.UTF-8 xterm-256color "-j2 -l2" /var/tmp "" 1 > builder-a.env
gen /home/builder /usr/bin:/bin de_DE.UTF-8 screen "-j64 -l64" /tmp/ptmp "ccache distcc" 7 > builder-b.env
