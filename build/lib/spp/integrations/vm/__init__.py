"""VMs on vhost-user ports: the QEMU launcher (``spp vm``), a guest image builder, serial exec.

* :mod:`.qemu`: the QEMU command line, as SPP's VM recipes build it;
* :mod:`.manager`: start/stop/status/list of the VMs a user started, with a state dir each;
* :mod:`.console`: run a command inside a guest over its unix-socket serial console;
* :mod:`.image`: a small bootable guest (Debian kernel + busybox initramfs) from distro packages;
* :mod:`.cli`: the ``spp-vm`` command line, also reached as ``spp vm`` from SPP's shell.
"""
