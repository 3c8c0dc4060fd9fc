"""The service runtime both the hub and the agent stand on: configuration files and
environment overrides, logging, Prometheus metrics, and systemd service notification.

It imports neither the hub nor the agent (an import-linter contract checks it).
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("doorkeeper")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"
