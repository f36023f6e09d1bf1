"""``python -m mbrl.cli ...``: the ``dreamshift`` command line (:func:`mbrl.cli.main`)."""

import sys

from mbrl.cli import main

sys.exit(main())
