"""The data plane: an async reverse proxy that runs every request through the containment filter chain."""

import rules  # noqa: F401,E402  (its import guards gateway's compiled modules too: rules/_build.py)
