"""The CE client library: DHCP with delayed authentication, VPN discovery, FORCERENEW (issue 4)."""
