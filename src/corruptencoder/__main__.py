"""``python -m corruptencoder`` is the ``corruptencoder`` command."""

import sys

from corruptencoder.cli import main

sys.exit(main())
