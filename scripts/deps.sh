#!/usr/bin/env bash
# Installs what building, testing and the demo need on a Debian machine, as
# root. Idempotent: packages already present are left alone, and the package
# lists are refreshed only when something is missing.
set -euo pipefail

packages=(
	clang llvm libbpf-dev linux-libc-dev # make generate, and the test that the BPF objects are fresh
	gcc libc6-dev                         # cgo, which the race detector in make test needs
	iproute2 iputils-ping arping ethtool  # test namespaces and their hosts
	busybox-static                        # udhcpc in tests, and the guests' userland
	qemu-system-x86                       # guests for the VM tests and the demo
	ca-certificates
)

missing=()
for p in "${packages[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
	if [ "$(id -u)" != 0 ]; then
		echo "deps: missing ${missing[*]}; run as root to install them" >&2
		exit 1
	fi
	echo "deps: installing ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
command -v go >/dev/null || { echo "deps: Go is needed (see go.mod for the version)" >&2; exit 1; }
