"""Discovery: read host state (netlink, sysfs, procfs, modprobe.d) into one NodeSnapshot."""
