"""What the chain follower knows: series, watched scripts, the pool's UTXOs, processed blocks.

Every function takes a Connection; the caller owns the transaction. The scanner applies (and
undoes) one block per transaction, so the ``blocks`` table is its crash-safe cursor.

Indexes: ``series_indexes.next_index`` is the first unused index of a (series, branch). Branch 0
gives the next receive address; branch 1's is the change index start of a round manifest. The
scanner watches indexes ``0 .. next_index + lookahead - 1`` of both branches of every series.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TypeVar

from sqlalchemy import (
    ColumnElement,
    Connection,
    Integer,
    Row,
    Select,
    and_,
    bindparam,
    case,
    delete,
    func,
    insert,
    not_,
    or_,
    select,
    update,
)

from coordinator.store.deposits import Status as DepositStatus
from coordinator.store.schema import (
    addresses,
    blocks,
    deposits,
    round_transactions,
    series,
    series_indexes,
    utxos,
)
from pool.errors import FieldError
from pool.manifest import Utxo
from pool.networks import Network
from pool.series import CHANGE, RECEIVE, Series, SeriesState, parsed_series
from pool.tx import OutPoint

BRANCHES = (RECEIVE, CHANGE)
_CHUNK = 500
"""Values per ``IN (...)`` list: far below SQLite's bound-parameter limit."""

_T = TypeVar("_T")


class SeriesExists(FieldError):
    """A series id, or the same threshold and keys, that the pool already has."""

    def __init__(self, message: str) -> None:
        super().__init__("series_id", message)


@dataclass(frozen=True)
class PoolAddress:
    """Where a watched scriptPubKey sits in the pool."""

    series_id: int
    branch: int
    index: int


@dataclass(frozen=True)
class BlockRecord:
    """A processed block (hashes in display hex)."""

    height: int
    hash: str
    prev_hash: str


@dataclass(frozen=True)
class PoolUtxo:
    """A row of the pool's UTXO set, spent or not."""

    txid: str
    vout: int
    value: int
    script_pubkey: bytes
    address: PoolAddress
    height: int
    coinbase: bool
    spent_txid: str | None
    spent_height: int | None
    reserved_round: int | None

    def to_manifest_utxo(self) -> Utxo:
        return Utxo(
            OutPoint.from_hex(self.txid, self.vout),
            self.value,
            self.address.series_id,
            self.address.branch,
            self.address.index,
            self.height,
        )


@dataclass(frozen=True)
class Balance:
    """Unspent pool outputs of one series: ``confirmed`` ones may enter a round."""

    confirmed: int
    unconfirmed: int
    count: int


def _chunks(items: Sequence[_T]) -> Iterator[Sequence[_T]]:
    for start in range(0, len(items), _CHUNK):
        yield items[start : start + _CHUNK]


# --------------------------------------------------------------------------- series


def _key_set(s: Series) -> tuple[int, frozenset[tuple[bytes, bytes]]]:
    """What determines a series' scripts: the threshold and the set of account keys."""
    return s.m, frozenset((k.xpub.public_key, k.xpub.chain_code) for k in s.keys)


def add_series(
    conn: Connection,
    series_id: int,
    receive_desc: str,
    change_desc: str,
    state: SeriesState,
    network: Network,
    now: float,
) -> Series:
    """Validate and store a series with both indexes at 0; an active one retires the others.

    Raises ``pool.errors.VpoolError`` for bad descriptors and ``SeriesExists`` for a known id or
    a threshold and key set that an existing series already has (they would share addresses).
    """
    new = Series.from_descriptors(series_id, receive_desc, change_desc, state, network)
    for old in all_series(conn, network):
        if old.id == series_id:
            raise SeriesExists(f"series {series_id} already exists")
        if _key_set(old) == _key_set(new):
            raise SeriesExists(f"series {old.id} has the same threshold and keys")
    conn.execute(
        insert(series).values(
            id=series_id,
            m=new.m,
            receive_descriptor=new.descriptor(RECEIVE).to_string(network),
            change_descriptor=new.descriptor(CHANGE).to_string(network),
            state=SeriesState.RETIRING.value,
            created_at=now,
        )
    )
    for branch in BRANCHES:
        conn.execute(
            insert(series_indexes).values(series_id=series_id, branch=branch, next_index=0)
        )
    if state is SeriesState.ACTIVE:
        activate_series(conn, series_id)
    return new


def activate_series(conn: Connection, series_id: int) -> None:
    """Make ``series_id`` the active series; the one active before becomes retiring."""
    found = conn.execute(select(series.c.id).where(series.c.id == series_id)).first()
    if found is None:
        raise KeyError(f"no series {series_id}")
    conn.execute(
        update(series)
        .where(and_(series.c.state == SeriesState.ACTIVE.value, series.c.id != series_id))
        .values(state=SeriesState.RETIRING.value, retired_height=None)
    )
    conn.execute(
        update(series)
        .where(series.c.id == series_id)
        .values(state=SeriesState.ACTIVE.value, retired_height=None)
    )


def active_series_id(conn: Connection) -> int | None:
    """The id of the active series (None when there is none)."""
    found = conn.execute(
        select(series.c.id).where(series.c.state == SeriesState.ACTIVE.value)
    ).scalar()
    return None if found is None else int(found)


def stamp_retirements(conn: Connection, height: int) -> None:
    """Give every retiring series without a retirement height this one: the first block
    processed after it stopped being active (its deposits' grace period counts from there)."""
    conn.execute(
        update(series)
        .where(
            and_(series.c.state == SeriesState.RETIRING.value, series.c.retired_height.is_(None))
        )
        .values(retired_height=height)
    )


def retirement_heights(conn: Connection) -> dict[int, int]:
    """Series id → retirement height, for the retiring series that have one."""
    rows = conn.execute(
        select(series.c.id, series.c.retired_height).where(series.c.retired_height.is_not(None))
    )
    return {int(r.id): int(r.retired_height) for r in rows}


def _series_from_row(row: Row[tuple[object, ...]], network: Network) -> Series:
    m = row._mapping
    return parsed_series(
        int(m["id"]),
        str(m["receive_descriptor"]),
        str(m["change_descriptor"]),
        SeriesState(m["state"]),
        network,
    )


def all_series(conn: Connection, network: Network) -> list[Series]:
    """Every series with its state, by ascending id."""
    rows = conn.execute(select(series).order_by(series.c.id)).all()
    return [_series_from_row(row, network) for row in rows]


def get_series(conn: Connection, series_id: int, network: Network) -> Series | None:
    row = conn.execute(select(series).where(series.c.id == series_id)).first()
    return None if row is None else _series_from_row(row, network)


# --------------------------------------------------------------------------- indexes, addresses


def next_index(conn: Connection, series_id: int, branch: int) -> int:
    """The first unused index of the branch (receive 0, change 1)."""
    value = conn.execute(
        select(series_indexes.c.next_index).where(
            and_(series_indexes.c.series_id == series_id, series_indexes.c.branch == branch)
        )
    ).scalar()
    if value is None:
        raise KeyError(f"no series {series_id} branch {branch}")
    return int(value)


def advance_index(conn: Connection, series_id: int, branch: int, to: int) -> None:
    """Raise the branch's next index to ``to``; an index never goes back."""
    current = next_index(conn, series_id, branch)
    if to > current:
        conn.execute(
            update(series_indexes)
            .where(and_(series_indexes.c.series_id == series_id, series_indexes.c.branch == branch))
            .values(next_index=to)
        )


def take_index(conn: Connection, series_id: int, branch: int) -> int:
    """The branch's next index, taken: the next index moves past it in the same statement, so
    concurrent callers never get the same one."""
    where = and_(series_indexes.c.series_id == series_id, series_indexes.c.branch == branch)
    after = conn.execute(
        update(series_indexes)
        .where(where)
        .values(next_index=series_indexes.c.next_index + 1)
        .returning(series_indexes.c.next_index)
    ).scalar()
    if after is None:
        raise KeyError(f"no series {series_id} branch {branch}")
    return int(after) - 1


def ensure_lookahead(conn: Connection, network: Network, lookahead: int) -> int:
    """Watch indexes ``0 .. next_index + lookahead - 1`` of every branch; return how many scripts
    were added. One query when nothing is missing, and only missing scripts are derived."""
    derived = (
        select(
            addresses.c.series_id,
            addresses.c.branch,
            func.max(addresses.c.idx).label("top"),
        )
        .group_by(addresses.c.series_id, addresses.c.branch)
        .subquery()
    )
    rows = conn.execute(
        select(series_indexes.c.series_id, series_indexes.c.branch, series_indexes.c.next_index)
        .add_columns(derived.c.top)
        .outerjoin(
            derived,
            and_(
                derived.c.series_id == series_indexes.c.series_id,
                derived.c.branch == series_indexes.c.branch,
            ),
        )
        .order_by(series_indexes.c.series_id, series_indexes.c.branch)
    ).all()
    added = 0
    for series_id, branch, next_idx, top in rows:
        first = 0 if top is None else int(top) + 1
        end = int(next_idx) + lookahead
        if first < end:
            _derive_range(conn, network, int(series_id), int(branch), first, end)
            added += end - first
    return added


def _derive_range(
    conn: Connection, network: Network, series_id: int, branch: int, first: int, end: int
) -> None:
    found = get_series(conn, series_id, network)
    assert found is not None  # series_indexes references series
    rows = [
        {
            "script_pubkey": found.derive(branch, i).script_pubkey,
            "series_id": series_id,
            "branch": branch,
            "idx": i,
        }
        for i in range(first, end)
    ]
    conn.execute(insert(addresses), rows)


def lookup_scripts(conn: Connection, scripts: Iterable[bytes]) -> dict[bytes, PoolAddress]:
    """The watched ones among ``scripts``, with where each sits in the pool."""
    wanted = sorted(set(scripts))
    found: dict[bytes, PoolAddress] = {}
    for chunk in _chunks(wanted):
        rows = conn.execute(select(addresses).where(addresses.c.script_pubkey.in_(chunk))).all()
        for r in rows:
            found[bytes(r.script_pubkey)] = PoolAddress(int(r.series_id), int(r.branch), int(r.idx))
    return found


def lookup_script(conn: Connection, script_pubkey: bytes) -> PoolAddress | None:
    return lookup_scripts(conn, [script_pubkey]).get(script_pubkey)


# --------------------------------------------------------------------------- utxos


def _utxo_from_row(row: Row[tuple[object, ...]]) -> PoolUtxo:
    m = row._mapping
    return PoolUtxo(
        txid=str(m["txid"]),
        vout=int(m["vout"]),
        value=int(m["value"]),
        script_pubkey=bytes(m["script_pubkey"]),
        address=PoolAddress(int(m["series_id"]), int(m["branch"]), int(m["idx"])),
        height=int(m["height"]),
        coinbase=bool(m["coinbase"]),
        spent_txid=None if m["spent_txid"] is None else str(m["spent_txid"]),
        spent_height=None if m["spent_height"] is None else int(m["spent_height"]),
        reserved_round=None if m["reserved_round"] is None else int(m["reserved_round"]),
    )


def add_utxo(
    conn: Connection,
    txid: str,
    vout: int,
    value: int,
    script_pubkey: bytes,
    address: PoolAddress,
    height: int,
    coinbase: bool,
) -> None:
    """A new unspent, unreserved pool output."""
    conn.execute(
        insert(utxos).values(
            txid=txid,
            vout=vout,
            value=value,
            script_pubkey=script_pubkey,
            series_id=address.series_id,
            branch=address.branch,
            idx=address.index,
            height=height,
            coinbase=coinbase,
        )
    )


def get_utxo(conn: Connection, txid: str, vout: int) -> PoolUtxo | None:
    row = conn.execute(
        select(utxos).where(and_(utxos.c.txid == txid, utxos.c.vout == vout))
    ).first()
    return None if row is None else _utxo_from_row(row)


def unspent_outpoints(conn: Connection, txids: Iterable[str]) -> set[tuple[str, int]]:
    """The (txid, vout) of unspent pool outputs created by any of ``txids``."""
    found: set[tuple[str, int]] = set()
    for chunk in _chunks(sorted(set(txids))):
        rows = conn.execute(
            select(utxos.c.txid, utxos.c.vout).where(
                and_(utxos.c.txid.in_(chunk), utxos.c.spent_txid.is_(None))
            )
        ).all()
        found.update((str(r.txid), int(r.vout)) for r in rows)
    return found


def spend_utxo(conn: Connection, txid: str, vout: int, spent_txid: str, spent_height: int) -> bool:
    """Mark an unspent pool output spent; False when there is no such output."""
    result = conn.execute(
        update(utxos)
        .where(and_(utxos.c.txid == txid, utxos.c.vout == vout, utxos.c.spent_txid.is_(None)))
        .values(spent_txid=spent_txid, spent_height=spent_height)
    )
    return result.rowcount == 1


def _spendable(tip_height: int, min_conf: int, coinbase_maturity: int) -> ColumnElement[bool]:
    """Confirmed ``min_conf`` times at ``tip_height``; coinbase outputs also mature."""
    return and_(
        utxos.c.height > 0,
        utxos.c.height <= tip_height - min_conf + 1,
        or_(not_(utxos.c.coinbase), utxos.c.height <= tip_height - coinbase_maturity + 1),
    )


_WITH_DEPOSITS = utxos.outerjoin(
    deposits, and_(deposits.c.txid == utxos.c.txid, deposits.c.vout == utxos.c.vout)
)
"""Pool outputs with the deposit each receive output is (change outputs have none)."""


def _of_status(*statuses: DepositStatus) -> ColumnElement[bool]:
    """Change outputs, and receive outputs whose deposit is in one of ``statuses``."""
    return or_(utxos.c.branch == CHANGE, deposits.c.status.in_([s.value for s in statuses]))


def eligible_utxos(
    conn: Connection, tip_height: int, min_conf: int, coinbase_maturity: int
) -> list[Utxo]:
    """Unspent, unreserved outputs with ``min_conf`` confirmations at ``tip_height`` (coinbase
    outputs: also ``coinbase_maturity``) that are the pool's own: change, and credited deposits
    (never one waiting for confirmations or a refund, nor dust). In (height, txid, vout) order:
    a round's snapshot."""
    rows = conn.execute(
        select(utxos)
        .select_from(_WITH_DEPOSITS)
        .where(
            and_(
                utxos.c.spent_txid.is_(None),
                utxos.c.reserved_round.is_(None),
                _spendable(tip_height, min_conf, coinbase_maturity),
                _of_status(DepositStatus.CREDITED),
            )
        )
        .order_by(utxos.c.height, utxos.c.txid, utxos.c.vout)
    ).all()
    return [_utxo_from_row(r).to_manifest_utxo() for r in rows]


def _spendable_at_bound_heights() -> ColumnElement[bool]:
    """``_spendable`` with its two heights as bound parameters (``conf_height``:
    ``tip_height - min_conf + 1``; ``maturity_height``: ``tip_height - coinbase_maturity + 1``),
    for statements built once."""
    return and_(
        utxos.c.height > 0,
        utxos.c.height <= bindparam("conf_height", type_=Integer),
        or_(
            not_(utxos.c.coinbase),
            utxos.c.height <= bindparam("maturity_height", type_=Integer),
        ),
    )


def _balances_statement() -> Select[tuple[int, int, int, int]]:
    ok = and_(_spendable_at_bound_heights(), _of_status(DepositStatus.CREDITED))
    return (
        select(
            utxos.c.series_id,
            func.sum(case((ok, utxos.c.value), else_=0)),
            func.sum(case((ok, 0), else_=utxos.c.value)),
            func.count(),
        )
        .select_from(_WITH_DEPOSITS)
        .where(
            and_(
                utxos.c.spent_txid.is_(None),
                _of_status(
                    DepositStatus.CREDITED,
                    DepositStatus.SEEN,
                    DepositStatus.CONFIRMING,
                    DepositStatus.CONFIRMED,
                ),
            )
        )
        .group_by(utxos.c.series_id)
    )


_BALANCES = _balances_statement()
"""Built once: SubmitWithdrawal's admission reads the balances for every batch, and building
the statement (and its cache key) cost more than running it."""
_SERIES_IDS = select(series.c.id)


def balances(
    conn: Connection, tip_height: int, min_conf: int, *, coinbase_maturity: int = 0
) -> dict[int, Balance]:
    """Per series id (every series, zeros included), over the unspent outputs that are or will
    be the pool's (change, credited deposits, deposits being confirmed or acknowledged): the
    value spendable as in ``eligible_utxos`` but reserved or not, the rest, and their number.
    Reserved outputs count: they are the pool's until a spending transaction is in a block.
    Deposits to be refunded, dust and removed deposits do not count."""
    rows = conn.execute(
        _BALANCES,
        {
            "conf_height": tip_height - min_conf + 1,
            "maturity_height": tip_height - coinbase_maturity + 1,
        },
    ).all()
    totals = {int(i): Balance(0, 0, 0) for i in conn.execute(_SERIES_IDS).scalars()}
    for series_id, confirmed, unconfirmed, count in rows:
        totals[int(series_id)] = Balance(int(confirmed), int(unconfirmed), int(count))
    return totals


# --------------------------------------------------------------------------- round transactions


def unconfirmed_round_txids(conn: Connection) -> set[str]:
    """Txids of round transactions not yet seen in a block."""
    rows = conn.execute(
        select(round_transactions.c.txid).where(round_transactions.c.block_height.is_(None))
    ).all()
    return {str(r.txid) for r in rows}


def confirm_round_transactions(
    conn: Connection, txids: Iterable[str], height: int, block_hash: str
) -> None:
    """Record the block that confirmed these round transactions."""
    for chunk in _chunks(sorted(set(txids))):
        conn.execute(
            update(round_transactions)
            .where(round_transactions.c.txid.in_(chunk))
            .values(block_height=height, block_hash=block_hash)
        )


# --------------------------------------------------------------------------- blocks


def _block_from_row(row: Row[tuple[object, ...]]) -> BlockRecord:
    m = row._mapping
    return BlockRecord(int(m["height"]), str(m["hash"]), str(m["prev_hash"]))


_LAST_BLOCK = select(blocks).order_by(blocks.c.height.desc()).limit(1)


def last_block(conn: Connection) -> BlockRecord | None:
    """The highest processed block: the scanner's cursor."""
    row = conn.execute(_LAST_BLOCK).first()
    return None if row is None else _block_from_row(row)


def block_at(conn: Connection, height: int) -> BlockRecord | None:
    row = conn.execute(select(blocks).where(blocks.c.height == height)).first()
    return None if row is None else _block_from_row(row)


def add_block(conn: Connection, block: BlockRecord, now: float, *, header_time: int) -> None:
    """Record a processed block; ``header_time`` is the timestamp in its header."""
    conn.execute(
        insert(blocks).values(
            height=block.height,
            hash=block.hash,
            prev_hash=block.prev_hash,
            processed_at=now,
            time=header_time,
        )
    )


def mined_time(header_time: int, processed_at: float) -> float:
    """When a block was mined, as well as the coordinator can tell: its header time, unless it
    processed the block before that (miners may set header times ahead of the clock, and a
    regtest node that mines fast runs minutes ahead)."""
    return min(float(header_time), processed_at)


def mined_times(conn: Connection, heights: Iterable[int]) -> dict[int, float]:
    """``mined_time`` of the processed blocks at ``heights``."""
    found: dict[int, float] = {}
    for chunk in _chunks(sorted(set(heights))):
        query = select(blocks.c.height, blocks.c.time, blocks.c.processed_at).where(
            blocks.c.height.in_(chunk)
        )
        found.update(
            (int(r.height), mined_time(int(r.time), float(r.processed_at)))
            for r in conn.execute(query)
        )
    return found


def undo_block(conn: Connection, block: BlockRecord) -> None:
    """Forget a processed block that left the chain: the outputs it created, its spends, the
    round transactions it confirmed, and the block itself. Only the last block can go."""
    if last_block(conn) != block:
        raise ValueError(f"block {block.height} {block.hash} is not the last processed block")
    conn.execute(delete(utxos).where(utxos.c.height == block.height))
    conn.execute(
        update(utxos)
        .where(utxos.c.spent_height == block.height)
        .values(spent_txid=None, spent_height=None)
    )
    conn.execute(
        update(round_transactions)
        .where(round_transactions.c.block_hash == block.hash)
        .values(block_height=None, block_hash=None)
    )
    conn.execute(delete(blocks).where(blocks.c.height == block.height))
