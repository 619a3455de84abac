"""A VICI probe for the VM test (instead of swanctl): ``python vici_probe.py SOCKET COMMAND [NAME]``.

Commands: ``ikesas NAME`` (number of IKE_SAs of connection NAME), ``conns`` (our connection
names), ``rekey NAME`` (rekey NAME's CHILD_SA ``ipip``).
"""

from __future__ import annotations

import socket
import sys

import vici


def main(argv: list[str]) -> int:
    path, command, *rest = argv
    sock = socket.socket(socket.AF_UNIX)
    sock.connect(path)
    session = vici.Session(sock)
    if command == "ikesas":
        print(sum(1 for entry in session.list_sas() for name in entry if name == rest[0]))
    elif command == "conns":
        print(" ".join(sorted(str(name) for entry in session.list_conns() for name in entry)))
    elif command == "rekey":
        session.rekey({"ike": rest[0], "child": "ipip"})
        print("rekey requested")
    else:
        print(f"unknown command {command}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
