"""The policy engine: rule model, taxonomy, normalization, compilation, matching and the policy store.

Pure Python, no HTTP: `gateway` (data plane) and `admin` (control plane) both build on it.
"""

from rules._build import guard

guard()  # a compiled build whose sources changed since is not used (see rules/_build.py)
