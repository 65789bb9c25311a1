"""The control plane: the admin API (bearer-token roles, audit), and the `containment` CLI."""
