package portagehook

import _ "embed"

// BashrcSnippet is the FEATURES=binary_sharing hook setup-portage installs
// into /etc/portage/bashrc. It defines its functions only in the postinst
// phase, so nothing of it reaches the environment.bz2 saved into binpkgs
// (which peers compare), and it never fails or stalls a merge.
//
//go:embed bashrc.sh
var BashrcSnippet string
