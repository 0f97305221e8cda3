"""`python -m devtools demo|dev ...`: the development commands without the product CLI."""

import sys

from watcher.cli.main import main

sys.exit(main())
