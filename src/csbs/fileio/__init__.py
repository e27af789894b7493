"""Low-level file access shared by the layers above: disks opened confined, by descriptor."""
