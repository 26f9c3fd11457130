"""Shared fixtures. Each group lives in its own module, registered here as a plugin."""

pytest_plugins = ["tests.store_fixtures", "tests.regtest_fixtures", "tests.pki_fixtures"]
