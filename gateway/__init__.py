"""The data plane: an async reverse proxy that runs every request through the containment filter chain."""
