import sys

from kexecfw.cli import main

sys.exit(main())
