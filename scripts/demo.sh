#!/usr/bin/env bash
# The demo: three hosts, each in its own network namespace behind a veth
# pair, plugged into xdpswitchd. Each gets its address from the daemon's
# DHCP server (through the switch and the network's host port), then they
# ping each other and the gateway. The daemon's counters and leases are
# printed at the end, and everything is removed.
set -euo pipefail
cd "$(dirname "$0")/.."

bin=bin/xdpswitchd
[ -x "$bin" ] || go build -o bin/ ./cmd/xdpswitchd
work=$(mktemp -d /tmp/xdpswitch-demo.XXXXXX)
tag=$$
hosts=(h1 h2 h3)
daemon_pid=

cleanup() {
	if [ -n "$daemon_pid" ] && kill -0 "$daemon_pid" 2>/dev/null; then
		kill -TERM "$daemon_pid"
		wait "$daemon_pid" || true
	fi
	for h in "${hosts[@]}"; do
		ip link del "xd$tag$h" 2>/dev/null || true
		ip netns del "xsdemo-$tag-$h" 2>/dev/null || true
	done
	rm -rf "$work"
}
trap cleanup EXIT

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "Three hosts, each in a namespace, each behind a veth pair"
ports=()
for i in 1 2 3; do
	h=h$i ns="xsdemo-$tag-$h" port="xd$tag$h"
	ip netns add "$ns"
	ip link add "$port" type veth peer name eth0 netns "$ns"
	ip link set "$port" up
	ip -n "$ns" link set lo up
	# Frames through AF_XDP carry no checksum-offload state.
	ip netns exec "$ns" ethtool -K eth0 tx off >/dev/null
	ip -n "$ns" link set eth0 up
	ports+=("$port")
	echo "$h: namespace $ns, switch port $port"
done
cat >"$work/udhcpc.sh" <<'SCRIPT'
#!/bin/sh
case "$1" in
bound|renew)
	ip addr flush dev "$interface"
	ip addr add "$ip/$mask" dev "$interface"
	echo "$ip" >"$OUT"
	echo "  lease $ip/$mask router $router dns $dns domain $domain lease ${lease}s"
	;;
deconfig) ip addr flush dev "$interface" ;;
esac
SCRIPT
chmod +x "$work/udhcpc.sh"

step "xdpswitchd with one network: the three ports, a gateway and DHCP"
cat >"$work/xdpswitch.yaml" <<CONF
run_dir: $work/run
state_dir: $work/state
networks:
  - name: demo
    ports: [${ports[0]}, ${ports[1]}, ${ports[2]}]
    gateway: 10.99.0.1/24
    dhcp:
      range: [10.99.0.100, 10.99.0.199]
      dns: [10.99.0.1]
      domain: demo.lan
CONF
cat "$work/xdpswitch.yaml"
"$bin" --config "$work/xdpswitch.yaml" >"$work/counters.txt" 2>"$work/daemon.log" &
daemon_pid=$!
for _ in $(seq 100); do
	grep -q "xdpswitchd ready" "$work/daemon.log" && break
	kill -0 "$daemon_pid" 2>/dev/null || { cat "$work/daemon.log"; exit 1; }
	sleep 0.1
done
grep -E "host port|port added|ready" "$work/daemon.log"

step "Each host asks for an address (busybox udhcpc)"
declare -A addr
for h in "${hosts[@]}"; do
	echo "$h:"
	ip netns exec "xsdemo-$tag-$h" env OUT="$work/$h.ip" \
		busybox udhcpc -i eth0 -n -q -t 5 -T 1 -s "$work/udhcpc.sh" 2>/dev/null | grep lease
	addr[$h]=$(cat "$work/$h.ip")
done

step "Every host pings every other host, and the gateway, through the switch"
failed=0
for a in "${hosts[@]}"; do
	for b in "${hosts[@]}" gw; do
		[ "$a" = "$b" ] && continue
		dst=${addr[$b]:-10.99.0.1}
		if out=$(ip netns exec "xsdemo-$tag-$a" ping -c 3 -i 0.2 -W 2 "$dst" 2>&1); then
			echo "$a -> $b ($dst): $(echo "$out" | grep -E 'packets transmitted')"
		else
			echo "$a -> $b ($dst): FAILED"; echo "$out"; failed=1
		fi
	done
done

step "The daemon's counters and leases"
kill -TERM "$daemon_pid"
wait "$daemon_pid" || true
daemon_pid=
cat "$work/counters.txt"
exit $failed
