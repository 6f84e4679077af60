"""0.2's and 0.3's path of :mod:`forksafe.host`: this name is that module
(the same object, so its state and its attributes are one), kept for the
configurations, code and docs that import it from here."""
import sys

import forksafe.host

sys.modules[__name__] = forksafe.host
