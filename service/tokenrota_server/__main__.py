"""`python -m tokenrota_server`: the same command line as the `tokenrota` script."""

import sys

from tokenrota_server.console import main

sys.exit(main())
