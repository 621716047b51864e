"""``python -m pneumo.report``: compute every task and render the report (see :mod:`pneumo.report.build`)."""

import sys

from pneumo.report.build import main

sys.exit(main())
