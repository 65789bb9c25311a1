"""The containment filters, one per file; `gateway.app` assembles them into the ordered chain."""
