"""ce-autoconf's DHCP server: RFC 2131 with RFC 3118 delayed authentication, VPN data by
DHCPINFORM (draft-lee appendix 3) and authenticated FORCERENEW (RFC 3203, RFC 6704).

A sans-IO engine (:mod:`dhcp_server.engine`) with a store behind an interface
(:mod:`dhcp_server.store`) and a thin asyncio driver.
"""
