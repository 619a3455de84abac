"""The runtime on a real kernel (Debian's, in the micro-VM): two CEs in namespaces joined by a veth.

One VM boot runs the whole story, each step printing a marker the test checks:
build (ipip + ESP transport SAs + policies between 192.0.2.1 and 192.0.2.2), a ping from the LAN
address behind CE1 to the one behind CE2, a capture on the provider link with only ESP between
the CE addresses, a second run that changes nothing, foreign objects left alone, an SA deleted
by hand repaired under a new epoch (ping again), and the peer's removal tearing everything down.
`ip` is used here only as the independent oracle.
"""

from __future__ import annotations

import json
import re

import microvm

SECRET = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"


def _config(local: str, peers: list[str], route: str | None) -> bytes:
    vpn: dict[str, object] = {"vpn_id": 7, "peers": peers, "secret_file": "vpn7.key"}
    if route and peers:
        vpn["routes"] = [[route, peers[0]]]
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
for f in build1 build2 again1 repair slide remove; do echo "== $f.log"; cat $f.log; done
echo "== cap"; head -20 cap.txt; cat ping1.txt ping2.txt
"""


def test_two_ces_in_the_vm() -> None:
    microvm.require_vm()
    files = {
        "vpn7.key": SECRET.encode(),
        "ce1.json": _config("192.0.2.1", ["192.0.2.2"], "10.2.0.0/24"),
        "ce2.json": _config("192.0.2.2", ["192.0.2.1"], "10.1.0.0/24"),
        "ce1-none.json": _config("192.0.2.1", [], None),
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
