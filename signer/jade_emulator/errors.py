"""The emulator's own error (RPC refusals are ``protocol.JadeRpcError``)."""


class EmulatorError(Exception):
    """The emulator cannot start: bad mnemonic, unusable state file, address in use..."""
