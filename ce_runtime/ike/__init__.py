"""IKEv2 keying for the CE tunnels through strongSwan's charon, driven over VICI (docs/runtime.md)."""

from ce_runtime.ike.config import CertAuth, IkePeer, IkeTimers, PskAuth
from ce_runtime.ike.state import Phase, RetryPolicy, TunnelEvent

__all__ = ["CertAuth", "IkePeer", "IkeTimers", "Phase", "PskAuth", "RetryPolicy", "TunnelEvent"]
