"""spp-ctl: SPP's control server — REST API v1 for clients, TCP wire ports for the processes.

Run it with ``spp-ctl -b 127.0.0.1 -p 5555 -s 6666 -a 7777`` (or ``python -m spp.control.ctl.main``).
It speaks the same REST API as SPP's spp-ctl (``/work/shared/spec/spp-api.md`` §3) and the same
wire protocol (§4), so SPP's CLI, networking-spp and SPP's C processes work against it, and so do
our Python processes.

Modules: :mod:`.main` (command line), :mod:`.server` (listeners, registration on connect),
:mod:`.wire` (connection, reply framing), :mod:`.registry` (process table, liveness),
:mod:`.webapi` (routes and handlers), :mod:`.validate` (body checks), :mod:`.launch` (``launch``
command), :mod:`.cpu` (cpu_layout / cpu_usage), :mod:`.errors`. The fake SPP processes for tests live in
``tests/ctl_doubles.py``.

Deliberate differences from SPP's spp-ctl — each fixes a bug or a trap of the original:

1. **Invalid values are 400, never 500.** SPP's ``KeyInvalid`` called ``super()`` wrongly, so every
   invalid action/type/dir/port/mac/vlan/direction answered a bare 500. We answer
   ``400 invalid key(<field>): <value>.`` (the message SPP intended). Port UIDs are checked strictly
   (``TYPE:N`` with plain digits, ``phy:NnqQ`` for queues; no stray whitespace or signs), also MACs
   (``xx:xx:xx:xx:xx:xx`` or ``default``), VLAN id 0..4095 / pcp 0..7, component names (one token),
   cores (integers), flow fields. A body that is not a JSON object is a 400 too.
2. **Forward endpoints validate ``action``.** SPP sent ``stop`` for any value other than ``start``
   and answered 500 when ``action`` was missing; we accept only ``start``/``stop`` (400 otherwise,
   ``key(action) required.`` when missing).
3. **Primary/nfv failures are reported.** SPP ignored ``"result": "failed"`` from primary/nfv and
   answered 204. A reply with ``"result": "failed"`` or ``"error"`` now gives 400 with the reply's
   ``"message"`` (our processes put a human-readable one there), else ``command failed: <command>``.
   vf/mirror/pcap errors stay ``400 command error: <error_details.message>``. A non-JSON reply is
   the C processes' echo: success for ``patch reset`` (their normal answer), a failure otherwise.
   Flow endpoints keep SPP's behaviour: 200 with the primary's reply, whatever its ``result``.
4. **Dead or silent processes → 503 and removal.** A reader task per connection notices EOF at
   once, even when idle, and drops the process from ``/v1/processes``. A process that does not
   answer in time (10 s; 20 s for ``launch``) or breaks its socket mid-command is dropped and the
   request gets ``503`` with a message (SPP: 500, and a hung process stayed registered).
   ``GET /v1/processes`` and ``GET /v1/cpu_usage`` still probe with ``status`` as SPP did; only a
   transport failure (not an error reply) removes a process.
5. **ID clashes are refused, not silently resolved.** SPP replaced a registered secondary by any
   newcomer with the same ID, so two workers could share one ID. We probe the current holder; if it
   is alive the newcomer is closed with a warning naming the ID; if it is dead the newcomer takes its
   place (same position in the list).
6. **launch is validated.** ``client_id`` must be 1..127 (digits-only strings accepted),
   ``proc_name`` one of spp_nfv/spp_vf/spp_mirror/spp_pcap, ``eal``/``app`` objects with the
   mandatory lcore and ``--proc-type`` options, option values one token each, an ID option in
   ``app`` equal to ``client_id``; an ID already registered gives ``409 Secondary ID N is already
   used.`` SPP built whatever it was given, or answered 500.
7. **Safe defaults.** Default bind address 127.0.0.1 (SPP: ``localhost``); ``GET /v1/cpu_layout`` reads
   sysfs itself instead of running a helper script.

Anything a client sends gets a 2xx/4xx/503 answer; 500 is left for bugs in spp-ctl itself and is
logged with a traceback.
"""
