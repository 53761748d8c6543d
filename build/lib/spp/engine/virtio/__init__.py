"""virtio-net over vhost-user, both sides, in Python on the packet engine.

* :mod:`.defs` — feature bits, message numbers and ring layouts (virtio 1.x, vhost-user spec).
* :mod:`.message` — vhost-user messages on a UNIX socket, with passed file descriptors.
* :mod:`.memory` — a peer's memory table mapped into one flat arena (address translation).
* :mod:`.ring` — split virtqueues as numpy views, processed a whole burst at a time.
* :mod:`.backend` — the device side (``vhost:N``): the vhost-user server or client.
* :mod:`.frontend` — the driver side (``virtio_user:N``): our own userspace virtio-net driver.
"""
