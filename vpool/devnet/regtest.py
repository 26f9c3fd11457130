"""`python -m vpool.devnet.regtest`: a bcoin regtest node by hand, and coins from it.

    python -m vpool.devnet.regtest node --dir node &   # runs until Ctrl-C or SIGTERM
    python -m vpool.devnet.regtest fund --node node --address bcrt1q... --amount 150000000
    python -m vpool.devnet.regtest mine --node node --blocks 6

``node`` starts bcoin from ``node_modules`` (``make node_modules``) with the flags the tests use
(regtest, in memory, no peers, no wallet, transaction index, JSON-RPC on loopback), mines past
segwit's activation to the development wallet, writes ``DIR/rpc-url`` and ``DIR/cookie`` (the
``user:password`` that ``cookie_file`` and ``rpc_cookie_file`` read) and serves until stopped;
the chain is gone when it stops. ``fund`` pays a Bitcoin Core-style regtest address
(``bcrt1...``, which the pool hands out; bcoin's own are ``rb1...``) from the development wallet
(vpool.devnet.wallet: coins it mined, found again on the chain) and mines one block; ``mine``
mines more.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time
from pathlib import Path

from pool.address import address_to_script_pubkey
from pool.errors import VpoolError
from pool.networks import REGTEST
from vpool.devnet.bcoin import RPC_USER, BcoinError, BcoinNode
from vpool.devnet.pool import START_BLOCKS
from vpool.devnet.wallet import DevWallet, WalletError

URL_FILE = "rpc-url"
COOKIE_FILE = "cookie"


def _node(args: argparse.Namespace) -> int:
    args.dir.mkdir(parents=True, exist_ok=True)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    with BcoinNode() as node:
        # Blocks mined in a burst at the real time would run the chain's clock ahead of it
        # (each block's time is past the median of the 11 before): start from a clock set back.
        node.rpc("setmocktime", int(time.time()) - START_BLOCKS // 4)
        DevWallet().mine(node, START_BLOCKS)
        node.rpc("setmocktime", int(time.time()))
        cookie = args.dir / COOKIE_FILE
        cookie.touch(mode=0o600)
        cookie.write_text(f"{RPC_USER}:{node.credentials[1]}\n", encoding="utf-8")
        (args.dir / URL_FILE).write_text(node.rpc_url + "\n", encoding="utf-8")
        print(
            f"bcoin regtest node at {node.rpc_url} (height {START_BLOCKS}); cookie file "
            f"{cookie}; stop it with Ctrl-C or kill {os.getpid()}",
            flush=True,
        )
        stop.wait()
    return 0


def _attach(directory: Path) -> BcoinNode:
    try:
        url = (directory / URL_FILE).read_text(encoding="utf-8").strip()
        user_password = (directory / COOKIE_FILE).read_text(encoding="utf-8").strip()
    except OSError as e:
        raise BcoinError(f"{e.filename}: {e.strerror} (is `regtest node --dir` running?)") from None
    return BcoinNode.attach(url, user_password.split(":", 1)[1])


def _wallet(node: BcoinNode) -> DevWallet:
    """The development wallet with every coin it received on the node's chain."""
    wallet = DevWallet()
    tip, _ = node.chain.tip()
    for height in range(1, tip + 1):
        block = node.chain.block(node.chain.block_hash(height))
        wallet.keep_block(block.transactions, height)
    return wallet


def _fund(args: argparse.Namespace) -> int:
    try:
        script = address_to_script_pubkey(args.address.lower(), REGTEST)
    except VpoolError as e:
        print(f"regtest: error: --address: {e}", file=sys.stderr)
        return 2
    node = _attach(args.node)
    wallet = _wallet(node)
    txid = wallet.fund(node, [(script, args.amount)])
    wallet.mine(node, args.blocks)
    print(f"{txid} pays {args.amount} sat to {args.address}; {args.blocks} block(s) mined")
    return 0


def _mine(args: argparse.Namespace) -> int:
    node = _attach(args.node)
    hashes = DevWallet().mine(node, args.blocks)
    print(f"mined {len(hashes)} block(s); height {node.chain.tip()[0]}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m vpool.devnet.regtest",
        description="a bcoin regtest node by hand, and coins from its development wallet",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    node = sub.add_parser("node", help="run a bcoin regtest node until stopped")
    node.add_argument("--dir", type=Path, required=True, help="where rpc-url and cookie go")
    node.set_defaults(handler=_node)
    fund = sub.add_parser("fund", help="pay an address from the development wallet")
    fund.add_argument("--node", type=Path, required=True, help="the node's --dir")
    fund.add_argument("--address", required=True, help="a regtest address (bcrt1...)")
    fund.add_argument("--amount", type=int, required=True, help="satoshis")
    fund.add_argument("--blocks", type=int, default=1, help="blocks to mine after (default 1)")
    fund.set_defaults(handler=_fund)
    mine = sub.add_parser("mine", help="mine blocks")
    mine.add_argument("--node", type=Path, required=True, help="the node's --dir")
    mine.add_argument("--blocks", type=int, required=True, help="how many")
    mine.set_defaults(handler=_mine)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        status: int = args.handler(args)
    except (BcoinError, WalletError) as e:
        print(f"regtest: error: {e}", file=sys.stderr)
        return 1
    return status


if __name__ == "__main__":
    sys.exit(main())
