from kexecfw.cli import run

run()
