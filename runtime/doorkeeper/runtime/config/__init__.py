"""Strict configuration files (TOML) with environment overrides; errors name the key path."""
