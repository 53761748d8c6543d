"""Traffic tools that use the packet engine directly: ``spp-pktgen`` and ``spp-l2fwd``."""
