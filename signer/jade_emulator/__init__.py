"""A Jade-protocol hardware wallet emulator that unmodified hwilib drives over TCP.

CI uses it to exercise the HWI signer backend end to end: ``JadeDevice`` holds the wallet and
answers RPC methods, ``JadeEmulatorServer`` speaks Jade's CBOR RPC on a TCP port the way the
Jade QEMU simulator does (hwilib probes ``tcp:127.0.0.1:30121``).
"""

from signer.jade_emulator.device import Faults, JadeDevice, master_from_mnemonic
from signer.jade_emulator.errors import EmulatorError
from signer.jade_emulator.server import HWI_SIMULATOR_PORT, JadeEmulatorServer

__all__ = [
    "HWI_SIMULATOR_PORT",
    "EmulatorError",
    "Faults",
    "JadeDevice",
    "JadeEmulatorServer",
    "master_from_mnemonic",
]
