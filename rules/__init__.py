"""The policy engine: rule model, taxonomy, normalization, compilation, matching and the policy store.

Pure Python, no HTTP: `gateway` (data plane) and `admin` (control plane) both build on it.
"""
