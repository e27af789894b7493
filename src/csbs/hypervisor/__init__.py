"""The hypervisor adapter: libvirt/QEMU domains on the worker's host.

`connection` opens libvirt (the `libvirt_uri` setting); `discovery` turns a domain's XML
into a `DomainInfo` (its disks, power state and Nova owner); `errors` holds the adapter's
errors and the sentence a tenant reads of each (it imports no binding). It imports nothing of csbs
but `domain`; the libvirt and libnbd bindings are imported only where used, so a machine
without them runs every other part of csbs.
"""
