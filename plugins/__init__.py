"""Architecture plugins shipped with kexecfw (installed as ``kexecfw.plugins``)."""
