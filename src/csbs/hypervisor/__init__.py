"""libvirt/QEMU hosts: the domains csbs backs up, read and restored over NBD."""
