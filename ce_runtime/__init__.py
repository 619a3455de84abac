"""The CE tunnel runtime: IP-in-IP protected by IPsec transport mode (issue 5)."""
