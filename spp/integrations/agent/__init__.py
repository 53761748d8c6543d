"""spp-agent: networking-spp's compute-node agent on a real etcd, and the operator's tools.

Run one agent per compute host, next to that host's spp-ctl, primary, spp_vf (client ids
1..N, ``--vhost-client``) and optional spp_mirror (client id N+1)::

    spp-agent --etcd 127.0.0.1:2379[,HOST:PORT...] --host compute1 --api 127.0.0.1:7777

(or ``python -m spp.integrations.agent ...``; ``--config-file neutron.ini`` works too). It
runs in the foreground, logs to stderr, and exits 0 on SIGTERM. From Python, with a running
loop: ``await Agent(host, Etcd(parse_endpoints("H:P,...")), "127.0.0.1:7777").run(stop_event)``.

Driving it without Neutron (each tool does in etcd what devstack or the driver does)::

    spp-agent config build --etcd E --host compute1 --mappings 00:04.0#phys1#2#0xfe [--mirror 2#0x30002]
    spp-agent port plug --etcd E --host compute1 --physnet phys1 --mac fa:16:3e:00:00:01 [--vlan 100]
    spp-agent port unplug --etcd E --host compute1 --port-id ID [--wait 20]
    spp-agent tap create --etcd E --service-port ID --source-port ID --direction IN|OUT|BOTH
    spp-agent tap delete --etcd E --flow-id ID
    spp-agent status --etcd E [--json]
    spp-agent etcd            # a private etcd on 127.0.0.1, for a quick try

From Python the same tools are coroutines in :mod:`spp.integrations.agent.tools` taking an
:class:`~spp.integrations.agent.etcd.Etcd`; :class:`~spp.integrations.agent.localetcd.LocalEtcd`
starts etcd members for tests (``name``/``cluster`` for a cluster).

Modules: ``keys`` (the key schema), ``layout`` (the configuration), ``etcd`` (aetcd over a
member list), ``sppctl`` (REST calls), ``dataplane`` (idempotent steps), ``agent`` (the loop),
``tools``, ``localetcd``, ``cli``.
"""
