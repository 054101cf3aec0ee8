import sys

from cluster.cli.commands import main

sys.exit(main())
