"""`python -m tokenrota_server`: the same command line as the `tokenrota` script."""

import sys

from tokenrota_server.cli.entry import main

sys.exit(main())
