"""The runtime on a real kernel (Debian's, in the micro-VM): two CEs in namespaces joined by a veth.

One VM boot runs the whole story, each step printing a marker the test checks:
build (ipip + ESP transport SAs + policies between 192.0.2.1 and 192.0.2.2), a ping from the LAN
address behind CE1 to the one behind CE2, a capture on the provider link with only ESP between
the CE addresses, a second run that changes nothing, foreign objects left alone, an SA deleted
by hand repaired under a new epoch (ping again), and the peer's removal tearing everything down.
Then VPN space in a VRF (section 2.2): the tunnels enslaved to the runtime's VRF, the VPN routes
in its table and not in main, a LAN host behind CE1 reaching one behind CE2 through the VRF, and
no route or packet crossing between VPN space and provider space (section 4).
`ip` is used here only as the independent oracle.
"""

from __future__ import annotations

import json
import re

import microvm

SECRET = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"


def _config(local: str, peers: list[str], route: str | None, *, vrf: bool = False) -> bytes:
    vpn: dict[str, object] = {"vpn_id": 7, "peers": peers, "secret_file": "vpn7.key"}
    if route and peers:
        vpn["routes"] = [[route, peers[0]]]
    if vrf:
        vpn.update(vrf="vpn7", table=1007)
    return json.dumps({"local": local, "vpns": [vpn]}).encode()


SCRIPT = r"""
set -u
PY="$CE_REPO/.venv/bin/python"
chmod 600 vpn7.key
rt() { ip netns exec "$1" "$PY" -m ce_runtime --config "$2" --state-dir "st-$1" --once 2>"$3"; }
ip netns add ce1 && ip netns add ce2
ip link add v1 netns ce1 type veth peer name v2 netns ce2
ip -n ce1 addr add 192.0.2.1/24 dev v1 && ip -n ce1 link set v1 up && ip -n ce1 link set lo up
ip -n ce2 addr add 192.0.2.2/24 dev v2 && ip -n ce2 link set v2 up && ip -n ce2 link set lo up
ip -n ce1 addr add 10.1.0.1/32 dev lo && ip -n ce2 addr add 10.2.0.1/32 dev lo
# Foreign objects in CE1, which the runtime must never touch.
ip -n ce1 link add foreign0 type ipip local 192.0.2.1 remote 198.51.100.9
ip -n ce1 xfrm state add src 192.0.2.1 dst 198.51.100.9 proto esp spi 0x4242 reqid 5 mode transport \
    aead 'rfc4106(gcm(aes))' 0x0102030405060708090a0b0c0d0e0f1011121314 128
ip -n ce1 xfrm policy add src 192.0.2.1/32 dst 198.51.100.9/32 proto 4 dir out priority 10 \
    tmpl proto esp mode transport reqid 5
snapshot() {
    ip -n ce1 -o link show foreign0 | cut -d' ' -f2
    ip -n ce1 xfrm state list spi 0x4242 | head -2
    ip -n ce1 xfrm policy list dst 198.51.100.9/32 | head -2
}
snapshot > foreign.before

rt ce1 ce1.json build1.log; echo "BUILD1 rc=$?"
rt ce2 ce2.json build2.log; echo "BUILD2 rc=$?"
echo "== ce1 after build"; ip -n ce1 -d link show cec0000202; ip -n ce1 xfrm state; ip -n ce1 xfrm policy; \
    ip -n ce1 route
stat -c 'EPOCHS %a' st-ce1/epochs.json

ip netns exec ce1 tcpdump -U -n -i v1 -w cap.pcap ip 2>/dev/null & TD=$!
sleep 2
ip netns exec ce1 ping -c 3 -W 3 -I 10.1.0.1 10.2.0.1 >ping1.txt 2>&1 && echo PING1_OK
sleep 1; kill $TD; wait $TD 2>/dev/null
tcpdump -n -r cap.pcap 2>/dev/null > cap.txt
echo "CAP_ESP $(grep -c 'ESP(spi=' cap.txt)"
echo "CAP_ICMP $(grep -c 'ICMP' cap.txt)"
echo "CAP_OTHER $(grep -vc 'ESP(spi=' cap.txt)"

rt ce1 ce1.json again1.log; echo "AGAIN rc=$? applied=$(grep -c 'applied' again1.log)"

SPI=$(ip -n ce1 xfrm state list src 192.0.2.1 dst 192.0.2.2 | sed -n 's/.*spi \(0x[0-9a-f]*\).*/\1/p')
ip -n ce1 xfrm state delete src 192.0.2.1 dst 192.0.2.2 proto esp spi "$SPI" && echo "DELETED $SPI"
rt ce1 ce1.json repair.log; echo "REPAIR rc=$? applied=$(grep -c 'applied' repair.log)"
NEWSPI=$(ip -n ce1 xfrm state list src 192.0.2.1 dst 192.0.2.2 | sed -n 's/.*spi \(0x[0-9a-f]*\).*/\1/p')
echo "NEWSPI $NEWSPI"
ip netns exec ce1 ping -c 2 -W 3 -I 10.1.0.1 10.2.0.1 >ping2.txt 2>&1 && echo PING2_OK
rt ce2 ce2.json slide.log; echo "SLIDE rc=$?"
ip netns exec ce1 ping -c 1 -W 3 -I 10.1.0.1 10.2.0.1 >ping3.txt 2>&1 && echo PING3_OK

rt ce1 ce1-none.json remove.log; echo "REMOVE rc=$?"
echo "LEFT_LINKS $(ip -n ce1 -o link show | grep -c ' ce[0-9a-f]\{8\}')"
echo "LEFT_SAS $(ip -n ce1 xfrm state | grep -c 'reqid 3456106503')"
echo "LEFT_POLICIES $(ip -n ce1 xfrm policy | grep -c 'reqid 3456106503')"
snapshot > foreign.after
cmp -s foreign.before foreign.after && echo FOREIGN_UNTOUCHED
cat foreign.after

# -- VPN space in a VRF. CE2 still has its plain tunnel: moving it into the VRF is part of the test.
ip -n ce1 addr del 10.1.0.1/32 dev lo; ip -n ce2 addr del 10.2.0.1/32 dev lo
ip -n ce1 link add vrfx type vrf table 1099  # someone else's VRF: never touched
for i in 1 2; do
    ip netns add lan$i
    ip link add l$i netns ce$i type veth peer name h$i netns lan$i
    ip -n lan$i addr add 10.$i.0.10/24 dev h$i && ip -n lan$i link set h$i up && ip -n lan$i link set lo up
    ip -n lan$i route add default via 10.$i.0.254
    ip netns exec ce$i sysctl -qw net.ipv4.ip_forward=1  # a CE routes between its LAN and the tunnels
done
rt ce1 ce1-vrf.json vrf1.log; echo "VRF1 rc=$?"
rt ce2 ce2-vrf.json vrf2.log; echo "VRF2 rc=$?"
# The operator puts the LAN side into the VPN's VRF (once the runtime has created it).
for i in 1 2; do
    ip -n ce$i link set l$i master vpn7 && ip -n ce$i addr add 10.$i.0.254/24 dev l$i
    ip -n ce$i link set l$i up
done
echo "== vrf ce1"; ip -n ce1 -d link show vpn7; ip -n ce1 -o link show master vpn7
ip -n ce1 route show table 1007; echo "-- main"; ip -n ce1 route show table main
echo "VRF_ALIAS $(ip -n ce1 -d link show vpn7 | grep -c 'alias ce-autoconf ')"
echo "VRF_TABLE $(ip -n ce1 -d link show vpn7 | grep -o 'vrf table [0-9]*')"
echo "ENSLAVED1 $(ip -n ce1 -o link show master vpn7 | grep -c 'cec0000202')"
echo "ENSLAVED2 $(ip -n ce2 -o link show master vpn7 | grep -c 'cec0000201')"
echo "VPN_ROUTE_IN_VRF1 $(ip -n ce1 route show table 1007 proto 206 | grep -c '^10.2.0.0/24 dev cec0000202')"
echo "VPN_ROUTE_IN_VRF2 $(ip -n ce2 route show table 1007 proto 206 | grep -c '^10.1.0.0/24 dev cec0000201')"
count() { ip -n "$1" route show table "$2" | grep -c "$3"; }
echo "VPN_IN_MAIN $(count ce1 main '^10\.') $(count ce2 main '^10\.')"
echo "PROVIDER_IN_VRF $(count ce1 1007 '192\.0\.2\.') $(count ce2 1007 '192\.0\.2\.')"
SEAL='^unreachable default proto 206'
echo "SEALED $(count ce1 1007 "$SEAL") $(count ce2 1007 "$SEAL")"
ip netns exec ce1 tcpdump -U -n -i v1 -w vcap.pcap ip 2>/dev/null & TD=$!
sleep 2
ip netns exec lan1 ping -c 3 -W 3 10.2.0.10 >vping.txt 2>&1 && echo VRF_PING_OK
# No leak either way: the VPN cannot reach provider space (CE2's provider address), and provider
# space (CE1's main table) cannot reach the VPN.
ip netns exec lan1 ping -c 1 -W 2 192.0.2.2 >leak1.txt 2>&1 || echo NO_LEAK_VPN_TO_PROVIDER
ip netns exec ce1 ping -c 1 -W 2 10.2.0.10 >leak2.txt 2>&1 || echo NO_LEAK_PROVIDER_TO_VPN
# The CE's own provider address: reachable from the VRF while the local rule precedes the VRF's
# (the kernel's default, documented), not once the operator moved it after (vrf.rst).
ip netns exec lan1 ping -c 1 -W 2 192.0.2.1 >/dev/null 2>&1 && echo "OWN_ADDRESS_DEFAULT reachable"
ip -n ce1 rule add pref 32765 table local && ip -n ce1 rule del pref 0
ip netns exec lan1 ping -c 1 -W 2 192.0.2.1 >/dev/null 2>&1 || echo "OWN_ADDRESS_MOVED unreachable"
ip netns exec lan1 ping -c 1 -W 3 10.2.0.10 >/dev/null 2>&1 && echo "VRF_PING_AFTER_RULE_OK"
sleep 1; kill $TD; wait $TD 2>/dev/null
# Provider space itself still works (after the capture: this one is plain ICMP on the wire).
ip netns exec ce1 ping -c 1 -W 3 192.0.2.2 >/dev/null 2>&1 && echo "PROVIDER_PING_AFTER_RULE_OK"
tcpdump -n -r vcap.pcap 2>/dev/null > vcap.txt
echo "VCAP_ESP $(grep -c 'ESP(spi=' vcap.txt)"
echo "VCAP_OTHER $(grep -vc 'ESP(spi=' vcap.txt)"
rt ce1 ce1-vrf.json vrfagain.log; echo "VRF_AGAIN rc=$? applied=$(grep -c 'applied' vrfagain.log)"

# -- Rekey before the ESP sequence number runs out, here after 50 packets: traffic goes on.
rtk() { ip netns exec "$1" "$PY" -m ce_runtime --config "$2" --state-dir "st-$1" --once \
    --rekey-packets 50 2>"$3"; }
outspi() { ip -n "$1" xfrm state list src "$2" dst "$3" | sed -n 's/.*spi \(0x[0-9a-f]*\).*/\1/p'; }
pkts() { ip -n "$1" -s xfrm state list spi "$2" | sed -n 's/.* \([0-9]*\)(packets)$/\1/p' | tail -1; }
OLD=$(outspi ce1 192.0.2.1 192.0.2.2); echo "REKEY_OLD $OLD"
ip -n ce1 -s xfrm state list spi "$OLD"
ip netns exec lan1 ping -i 0.2 -W 2 10.2.0.10 >rping.txt 2>&1 & RP=$!
i=0; while [ $i -lt 120 ] && [ "$(pkts ce1 "$OLD")" -lt 50 ]; do sleep 0.5; i=$((i+1)); done
echo "BEFORE_REKEY packets=$(pkts ce1 "$OLD")"
rtk ce1 ce1-vrf.json rekey1.log; echo "REKEY1 rc=$?"
NEW=$(outspi ce1 192.0.2.1 192.0.2.2); echo "REKEY_NEW $NEW"
echo "OLD_LEFT_CE1 $(ip -n ce1 xfrm state list spi "$OLD" | grep -c spi)"
echo "HARD_LIMIT $(ip -n ce1 -s xfrm state list spi "$NEW" | grep -c 'hard 4293918719(packets)')"
sleep 2
# CE2: its window slides to CE1's new epoch (and its own outbound, the replies, rekeys too).
rtk ce2 ce2-vrf.json rekey2.log; echo "REKEY2 rc=$?"
echo "NEW_PACKETS $(pkts ce1 "$NEW")"
echo "OLD_LEFT_CE2 $(ip -n ce2 xfrm state list spi "$OLD" | grep -c spi)"
echo "NEW_AT_CE2 $(ip -n ce2 xfrm state list spi "$NEW" | grep -c spi)"
rtk ce1 ce1-vrf.json rekey3.log; echo "REKEY3 rc=$?"
sleep 2; kill -INT $RP; wait $RP
# Lost = echo requests up to the last answered one that got no answer (the one in flight when
# ping was stopped does not count).
LAST=$(grep -o 'icmp_seq=[0-9]*' rping.txt | tail -1 | cut -d= -f2)
echo "REKEY_PING replies=$(grep -c 'icmp_seq=' rping.txt) last=$LAST"
cat st-ce1/epochs.json st-ce2/epochs.json; echo
# The VPN leaves the VRF config: links released, our VRF removed once nobody else is in it.
ip -n ce1 link set l1 nomaster
rt ce1 ce1-none.json vrfremove.log; echo "VRF_REMOVE rc=$?"
echo "VRF_LEFT $(ip -n ce1 -o link show type vrf | grep -c ' vpn7:') $(count ce1 1007 .)"
echo "FOREIGN_VRF $(ip -n ce1 -d link show vrfx | grep -c 'vrf table 1099')"
for f in build1 build2 again1 repair slide remove vrf1 vrf2 vrfagain rekey1 rekey2 rekey3 vrfremove; do
    echo "== $f.log"; cat $f.log
done
cat vping.txt leak1.txt leak2.txt; head -20 vcap.txt
echo "== cap"; head -20 cap.txt; cat ping1.txt ping2.txt
"""


def test_two_ces_in_the_vm() -> None:
    microvm.require_vm()
    files = {
        "vpn7.key": SECRET.encode(),
        "ce1.json": _config("192.0.2.1", ["192.0.2.2"], "10.2.0.0/24"),
        "ce2.json": _config("192.0.2.2", ["192.0.2.1"], "10.1.0.0/24"),
        "ce1-none.json": _config("192.0.2.1", [], None),
        "ce1-vrf.json": _config("192.0.2.1", ["192.0.2.2"], "10.2.0.0/24", vrf=True),
        "ce2-vrf.json": _config("192.0.2.2", ["192.0.2.1"], "10.1.0.0/24", vrf=True),
    }
    result = microvm.run_in_vm(SCRIPT, timeout=900, files=files)
    out = result.stdout
    why = result.explain()
    assert "BUILD1 rc=0" in out, why
    assert "BUILD2 rc=0" in out, why
    assert "EPOCHS 600" in out, why
    assert "PING1_OK" in out, why
    esp = re.search(r"CAP_ESP (\d+)", out)
    assert esp is not None and int(esp.group(1)) >= 6, why  # 3 requests + 3 replies, all ESP
    assert "CAP_ICMP 0" in out, why
    assert "CAP_OTHER 0" in out, why
    assert "AGAIN rc=0 applied=0" in out, why  # idempotent
    assert "REPAIR rc=0 applied=1" in out, why  # only the missing SA
    deleted = re.search(r"DELETED (0x[0-9a-f]+)", out)
    new = re.search(r"NEWSPI (0x[0-9a-f]+)", out)
    assert deleted and new and deleted.group(1) != new.group(1), why  # never the same (key, SPI) again
    assert "PING2_OK" in out, why
    assert "PING3_OK" in out, why
    assert "REMOVE rc=0" in out, why
    assert "LEFT_LINKS 0" in out, why
    assert "LEFT_SAS 0" in out, why
    assert "LEFT_POLICIES 0" in out, why
    assert "FOREIGN_UNTOUCHED" in out, why
    # VRF (section 2.2) and no leaks (section 4).
    assert "VRF1 rc=0" in out and "VRF2 rc=0" in out, why
    assert "VRF_ALIAS 1" in out and "VRF_TABLE vrf table 1007" in out, why
    assert "ENSLAVED1 1" in out and "ENSLAVED2 1" in out, why
    assert "VPN_ROUTE_IN_VRF1 1" in out and "VPN_ROUTE_IN_VRF2 1" in out, why
    assert "VPN_IN_MAIN 0 0" in out, why
    assert "PROVIDER_IN_VRF 0 0" in out, why
    assert "SEALED 1 1" in out, why  # a lookup that misses in the VRF stops there
    assert "VRF_PING_OK" in out, why
    assert "NO_LEAK_VPN_TO_PROVIDER" in out and "NO_LEAK_PROVIDER_TO_VPN" in out, why
    assert "OWN_ADDRESS_MOVED unreachable" in out, why
    assert "VRF_PING_AFTER_RULE_OK" in out and "PROVIDER_PING_AFTER_RULE_OK" in out, why
    vesp = re.search(r"VCAP_ESP (\d+)", out)
    assert vesp is not None and int(vesp.group(1)) >= 6, why
    assert "VCAP_OTHER 0" in out, why  # the leak probes never reached the wire either
    assert "VRF_AGAIN rc=0 applied=0" in out, why
    # Rekey (threshold 50 packets): make-before-break, new SPI in use, old SA gone at both ends.
    assert "REKEY1 rc=0" in out and "REKEY2 rc=0" in out and "REKEY3 rc=0" in out, why
    old = re.search(r"REKEY_OLD (0x[0-9a-f]+)", out)
    new = re.search(r"REKEY_NEW (0x[0-9a-f]+)", out)
    assert old and new and old.group(1) != new.group(1), why
    assert "OLD_LEFT_CE1 0" in out and "OLD_LEFT_CE2 0" in out and "NEW_AT_CE2 1" in out, why
    assert "HARD_LIMIT 1" in out, why
    used = re.search(r"NEW_PACKETS (\d+)", out)
    assert used is not None and int(used.group(1)) > 0, why
    ping = re.search(r"REKEY_PING replies=(\d+) last=(\d+)", out)
    assert ping is not None and int(ping.group(2)) >= 60, why  # it ran across the rekeys
    assert int(ping.group(2)) - int(ping.group(1)) <= 2, why  # a packet or two lost at most
    assert "VRF_REMOVE rc=0" in out and "VRF_LEFT 0 0" in out, why  # the device and its table's routes
    assert "FOREIGN_VRF 1" in out, why
