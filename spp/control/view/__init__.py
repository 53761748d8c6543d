"""Pictures of the running panel, shared by the CLI's ``topo`` and spp-ctl's web page:
:mod:`.model` (the graph, from REST replies), :mod:`.layout`, :mod:`.svg`, :mod:`.mermaid`,
:mod:`.rates` (counters to pps and bit/s) and :mod:`.plot` (rate-over-time charts)."""
