"""The fakes moved to demo/fakes (`orgsync dev --demo` serves them too).

These aliases keep ``tests.fakes.<module>`` imports in branches written
before the move working; new code imports ``demo.fakes``."""
from __future__ import annotations

import sys

from demo.fakes import github_server, gitlab_server, issuer, server

for _module in (github_server, gitlab_server, issuer, server):
    sys.modules[f"{__name__}.{_module.__name__.rsplit('.', 1)[1]}"] = _module
