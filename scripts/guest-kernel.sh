#!/bin/bash
# guest-kernel.sh OUTDIR
#
# Provides a kernel for the project's QEMU test guests, taken from Debian's
# own kernel package:
#
#   OUTDIR/vmlinuz              the kernel
#   OUTDIR/modules/NAME.ko      virtio-net and everything it needs (virtio
#                               transport, virtio_net, net_failover, ...),
#                               decompressed
#   OUTDIR/modules/load-order   module names, one a line, dependencies first
#   OUTDIR/kernel-package       the Debian package they came from
#
# Idempotent: when the outputs exist nothing is done. Otherwise the current
# linux-image-*-amd64 is fetched with `apt-get download` (override with
# XS_KERNEL_PACKAGE=linux-image-...-amd64) and unpacked with dpkg-deb into a
# temporary directory. `apt-get update` runs only when the package cannot be
# found or downloaded with the package lists at hand. Needs root (or a user
# allowed to run apt-get download) and Debian's apt, dpkg and coreutils.
set -euo pipefail

if [ $# -ne 1 ] || [ -z "$1" ]; then
	echo "usage: $0 OUTDIR" >&2
	exit 2
fi
out=$1

# The modules the guest loads; their dependencies are added from the
# modules' own metadata (the package ships no modules.dep: depmod makes it
# at install time).
wanted="virtio_pci virtio_net"

done_already() {
	[ -s "$out/vmlinuz" ] && [ -s "$out/modules/load-order" ]
}

if done_already; then
	exit 0
fi

mkdir -p "$out"
# One builder at a time; a second one waits and then finds the work done.
exec 9>"$out/.lock"
flock 9
if done_already; then
	exit 0
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/guest-kernel.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
# apt-get download drops to the _apt user; let it write here.
if [ "$(id -u)" = 0 ] && id _apt >/dev/null 2>&1; then
	chmod 0755 "$tmp"
	chown _apt "$tmp"
fi

# pick_package prints the linux-image package the metapackage depends on,
# or else the newest versioned linux-image-*-amd64 apt knows.
pick_package() {
	if [ -n "${XS_KERNEL_PACKAGE:-}" ]; then
		echo "$XS_KERNEL_PACKAGE"
		return 0
	fi
	local p
	p=$(apt-cache depends linux-image-amd64 2>/dev/null |
		sed -n 's/^ *Depends: \(linux-image-[0-9][^ ]*-amd64\)$/\1/p' | head -n1) || true
	if [ -z "$p" ]; then
		p=$(apt-cache pkgnames linux-image- 2>/dev/null |
			grep -E '^linux-image-[0-9][0-9.]*-[0-9]+-amd64$' | sort -V | tail -n1) || true
	fi
	[ -n "$p" ] || return 1
	echo "$p"
}

download() {
	local p
	p=$(pick_package) || return 1
	echo "guest-kernel: downloading $p" >&2
	(cd "$tmp" && apt-get download -q "$p" >&2) || return 1
	echo "$p" >"$tmp/package"
}

if ! download; then
	echo "guest-kernel: no kernel package with the current package lists; running apt-get update" >&2
	apt-get update -q >&2
	download
fi
pkg=$(cat "$tmp/package")

mkdir "$tmp/root"
dpkg-deb -x "$tmp"/linux-image-*.deb "$tmp/root"

kernel=$(ls "$tmp"/root/boot/vmlinuz-* 2>/dev/null | head -n1) || true
if [ -z "$kernel" ]; then
	echo "guest-kernel: $pkg holds no /boot/vmlinuz-*" >&2
	exit 1
fi
version=${kernel##*/vmlinuz-}
moddir=
for d in "$tmp/root/lib/modules/$version" "$tmp/root/usr/lib/modules/$version"; do
	if [ -d "$d" ]; then
		moddir=$d
	fi
done
if [ -z "$moddir" ]; then
	echo "guest-kernel: $pkg holds no modules for $version" >&2
	exit 1
fi

# find_module NAME prints the module's file (any compression, - or _).
find_module() {
	local alt=${1//_/-}
	find "$moddir" -type f \( -name "$1.ko" -o -name "$1.ko.*" -o -name "$alt.ko" -o -name "$alt.ko.*" \) | head -n1
}

mkdir "$tmp/modules"
# fetch_module NAME puts NAME.ko, uncompressed, into $tmp/modules.
fetch_module() {
	local f
	f=$(find_module "$1")
	if [ -z "$f" ]; then
		# Built into this kernel: nothing to load.
		if grep -qE "/$1\.ko$" "$moddir/modules.builtin" 2>/dev/null; then
			return 0
		fi
		echo "guest-kernel: module $1 not found in $pkg" >&2
		exit 1
	fi
	case $f in
	*.ko) cp "$f" "$tmp/modules/$1.ko" ;;
	*.ko.xz) xz -dc "$f" >"$tmp/modules/$1.ko" ;;
	*.ko.zst) zstd -qdc "$f" >"$tmp/modules/$1.ko" ;;
	*.ko.gz) gzip -dc "$f" >"$tmp/modules/$1.ko" ;;
	*)
		echo "guest-kernel: cannot decompress $f" >&2
		exit 1
		;;
	esac
}

# depends_of NAME prints the modules NAME needs, read from its .modinfo
# section (the "depends=a,b" string).
depends_of() {
	[ -f "$tmp/modules/$1.ko" ] || return 0
	tr '\0' '\n' <"$tmp/modules/$1.ko" | sed -n 's/^depends=//p' | head -n1 | tr ',' ' '
}

order=
# resolve NAME appends NAME to $order after everything it depends on.
resolve() {
	local m=${1//-/_} d
	case " $order " in *" $m "*) return 0 ;; esac
	fetch_module "$m"
	for d in $(depends_of "$m"); do
		resolve "$d"
	done
	if [ -f "$tmp/modules/$m.ko" ]; then
		order="$order $m"
	fi
}
for m in $wanted; do
	resolve "$m"
done

for m in $order; do
	echo "$m"
done >"$tmp/modules/load-order"
echo "$pkg" >"$tmp/kernel-package"

# Publish: the load-order file is what marks the outputs complete, so it
# goes last.
rm -rf "$out/modules.new"
mkdir "$out/modules.new"
cp "$tmp"/modules/*.ko "$out/modules.new/"
cp "$kernel" "$out/vmlinuz.new"
mv -f "$out/vmlinuz.new" "$out/vmlinuz"
cp "$tmp/kernel-package" "$out/kernel-package"
rm -rf "$out/modules"
mv "$out/modules.new" "$out/modules"
cp "$tmp/modules/load-order" "$out/modules/load-order.new"
mv "$out/modules/load-order.new" "$out/modules/load-order"
echo "guest-kernel: $pkg: $out/vmlinuz, modules:$order" >&2
