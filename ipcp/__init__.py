"""PPP for customer-edge provisioning: HDLC-like framing, LCP and IPCP with the VPN-IP-Addresses option.

Three layers: a pure codec (``hdlc``, ``frame``, ``packet``, ``option`` and one module per RFC),
a sans-IO engine (``fsm`` for RFC 1661's automaton, ``lcp``/``roles`` for option policies,
``session`` composing them) and a small asyncio driver (``driver``). See ``docs/ppp.md``.
"""

__all__: list[str] = []
