"""The byte formats both sides of the wire must agree on, byte for byte.

Keys and key ids, signed-message framing, call signatures, registration tokens, state
digests, template encoding, card/PIN hashes, entry records and their chain, and the size
caps both sides enforce. `doorkeeper.v1` beside it holds the generated protobuf/gRPC stubs.
Nothing here imports any other part of doorkeeper (an import-linter contract checks it).
"""
