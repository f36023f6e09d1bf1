"""``python -m dreamshift ...``: the ``dreamshift`` command line (:func:`dreamshift.main`)."""

import sys

from dreamshift import main

sys.exit(main())
