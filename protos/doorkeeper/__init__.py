"""doorkeeper: the contract package.

`doorkeeper.v1` holds the generated protobuf/gRPC stubs; the modules here hold
the formats both sides must agree on byte for byte (keys, signed messages,
state digests, template encoding). `doorkeeper.hub`, `doorkeeper.agent` and
`doorkeeper.tools` live in the repository's `hub/`, `agent/` and `tools/`.
"""

__version__ = "0.1.0"
