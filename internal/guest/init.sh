#!/bin/sh
# /init of the xdpswitch test guest (busybox). The serial console /dev/ttyS0
# carries a line protocol for the host (package guest):
#
#   guest -> host  XS-READY                      the command channel is up
#   host -> guest  XS-RUN <id> <shell command>   run it with sh
#   guest -> host  XS-OUT <id> <line>            one line of its output
#   guest -> host  XS-DONE <id> <exit status>    it has finished
#   guest -> host  XS-LEASE <if> <ip> <router> <mac>   udhcpc got a lease
#   guest -> host  XS-NIC <if> <mac>             a new NIC was brought up
#   guest -> host  XS-ERROR <text>               something in /init failed
#
# Everything else on the console (kernel messages, udhcpc chatter) is noise.
export PATH=/sbin:/usr/sbin:/bin:/usr/bin
export HOME=/root

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /run /tmp /var/run
mount -t devpts devpts /dev/pts

exec </dev/ttyS0 >/dev/ttyS0 2>&1
# Raw: no echo of what the host sends, no signals from stray bytes, no
# line-length limit, no \r added to output.
stty raw -echo

while read -r m; do
	insmod "/lib/modules/xs/$m.ko" || echo "XS-ERROR insmod $m"
done </lib/modules/xs/load-order

hostname xsguest
ip link set lo up

# watch_nics brings up every eth* that appears, also those hot-plugged
# later, and starts a DHCP client on it. A NIC is known by name and ifindex,
# so one removed and added again under the same name counts as new.
watch_nics() {
	seen=" "
	while :; do
		for d in /sys/class/net/eth*; do
			[ -e "$d" ] || continue
			n=${d##*/}
			idx=
			read -r idx <"$d/ifindex" 2>/dev/null
			key="$n:$idx"
			case $seen in *" $key "*) continue ;; esac
			seen="$seen$key "
			ip link set "$n" up
			echo "XS-NIC $n $(cat "$d/address")"
			udhcpc -i "$n" -b -t 10 -T 1 -s /etc/udhcpc.script \
				-p "/run/udhcpc.$n.pid" </dev/null >/dev/null 2>&1 &
		done
		sleep 0.2
	done
}
watch_nics </dev/null &

# run_cmd ID COMMAND runs the command and reports it on the console.
run_cmd() {
	f=/tmp/xs-out.$1
	sh -c "$2" </dev/null >"$f" 2>&1
	st=$?
	sed "s/^/XS-OUT $1 /" "$f"
	# XS-DONE starts a line of its own even when the output did not end
	# with a newline.
	if [ -n "$(tail -c 1 "$f")" ]; then echo; fi
	rm -f "$f"
	echo "XS-DONE $1 $st"
}

# command_loop reads the host's requests from the console. It is not PID 1
# and each command runs in a grandchild that PID 1 inherits: a child exiting
# while `read` waits for input would interrupt it (SIGCHLD) and lose the
# part of the line already read.
command_loop() {
	while :; do
		while IFS= read -r line; do
			case $line in
			"XS-RUN "*)
				rest=${line#XS-RUN }
				id=${rest%% *}
				cmd=
				[ "$id" = "$rest" ] || cmd=${rest#* }
				(run_cmd "$id" "$cmd" &)
				;;
			esac
		done
		sleep 0.2
	done
}
command_loop </dev/ttyS0 &

echo XS-READY
# PID 1 reaps orphans (finished commands, daemonized udhcpc) forever.
while :; do
	wait
	sleep 1
done
