"""Low-level file access shared by the layers above.

`confined`: disks opened once, confined beneath an inventory root, by descriptor.
`direct`: direct I/O on an fd, and the page-aligned memory it writes from.
`loops`: reads and writes of exactly the bytes asked for.
"""
