"""Fuzzing: Hypothesis-generated requests to every method of the three gRPC services, over mutual
TLS on loopback, and raw bytes to the PSBT and manifest decoders.

- ``CoordinatorService`` and ``AdminService``: the coordinator's API servers in process (its real
  ``start_server``, ``CoordinatorApi``, ``AdminApi``, the round engine and the scheduler) on a
  SQLite store holding a funded series; the chain's RPC address is dead, so what needs the node
  answers UNAVAILABLE.
- ``SignerService``: a signer daemon process (emulator backend) with one registered series.

Every request message is drawn from its descriptor (``messages``): each field from its type,
with the edges (0, the type's limits, empty and long strings, unknown enum values) and, for the
fields a real client fills, plausible values (valid addresses, registered series ids, request
ids seen before) so that calls get past the first check. Each call must end with OK or a clear
status, never ``INTERNAL`` or ``UNKNOWN``; the server must keep answering; and a refused call
(an error status, or a SignRound answered with refusals and no signature) must leave the store
as it was: a digest of every table's rows, taken before and after the call. The signer's
``signing_log`` is its audit trail (a refused round is logged by design) and is left out of its
digest.

A GetDepositAddress refused for want of signers takes no receive index (it is refused before
one is taken), so it counts like any other refusal. ``make reliability`` makes at least 5,000
calls per service; ``make test`` a sample of 60.
"""

from __future__ import annotations

import hashlib
import sqlite3
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine

from coordinator.chain import BitcoinRPC
from coordinator.rounds import RoundEngine
from coordinator.signers import SignerPool
from coordinator.store.schema import make_engine, migrate
from pool.errors import VpoolError
from pool.manifest import decode_manifest, encode_manifest
from pool.psbt import Psbt
from pool.refunds import decode_refund_manifest
from pool.series import RECEIVE
from tests.coordinator_harness import (
    ApiServer,
    address,
    coordinator_tls,
    fund_pool,
    make_config,
    signer_endpoints,
)
from tests.factories import BTC, make_series, master_key
from tests.reliability.conftest import FULL, Rows
from tests.store_fixtures import add_active_series
from vpool.devnet.processes import Pki, SignerDaemon, emulator_backend, write_config, write_keystore
from vpool.v1 import coordinator_pb2, signer_pb2, signer_pb2_grpc

CALLS = 5_000 if FULL else 60
"""Generated calls per service."""
DECODER_INPUTS = 20_000 if FULL else 300
SERIES = make_series(1, 2, [0, 1, 2])
TIMEOUT = 10.0
STREAM_TIMEOUT = 0.3
FORBIDDEN = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN}
INT_EDGES = {
    FieldDescriptor.TYPE_INT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SINT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_UINT32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_FIXED32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_INT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SINT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_UINT64: (0, 2**64 - 1),
    FieldDescriptor.TYPE_FIXED64: (0, 2**64 - 1),
}


# --------------------------------------------------------------------------- messages


def _plausible_strings() -> st.SearchStrategy[str]:
    valid = [address(f"fuzz-{i}") for i in range(3)]
    valid += [SERIES.address(RECEIVE, 0, _regtest()), "alice", "w-1", "signer-0", "ops", ""]
    return st.sampled_from(valid)


def _regtest() -> Any:
    from pool.networks import REGTEST

    return REGTEST


def _scalar(fd: FieldDescriptor, depth: int) -> st.SearchStrategy[Any]:
    if fd.type in INT_EDGES:
        low, high = INT_EDGES[fd.type]
        edges = [low, high, 0, 1, 546, BTC, 10 * BTC + 1]
        return st.one_of(
            st.sampled_from([e for e in edges if low <= e <= high]),
            st.integers(min_value=max(low, -(10**9)), max_value=min(high, 10**12)),
            st.integers(min_value=low, max_value=high),
        )
    if fd.type == FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if fd.type in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        return st.floats(allow_nan=True, width=32 if fd.type == FieldDescriptor.TYPE_FLOAT else 64)
    if fd.type == FieldDescriptor.TYPE_STRING:
        return st.one_of(
            _plausible_strings(),
            st.text(max_size=40),
            st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-_:", max_size=80),
            st.just("x" * 5_000),
        )
    if fd.type == FieldDescriptor.TYPE_BYTES:
        return st.one_of(st.binary(max_size=200), st.just(b"\0" * 40_000))
    if fd.type == FieldDescriptor.TYPE_ENUM:
        values = [v.number for v in fd.enum_type.values]
        return st.one_of(st.sampled_from(values), st.integers(min_value=-5, max_value=1_000))
    if fd.type == FieldDescriptor.TYPE_MESSAGE:
        return message_fields(fd.message_type, depth + 1)
    raise AssertionError(f"field type {fd.type} of {fd.full_name}")


def message_fields(descriptor: Descriptor, depth: int = 0) -> st.SearchStrategy[dict[str, Any]]:
    """Keyword arguments for ``descriptor``'s message: any subset of its fields, each drawn
    from its type (``_scalar``); nested messages to depth 3."""
    strategies: dict[str, st.SearchStrategy[Any]] = {}
    for fd in descriptor.fields:
        if fd.type == FieldDescriptor.TYPE_MESSAGE and depth >= 3:
            continue
        if fd.message_type is not None and fd.message_type.GetOptions().map_entry:
            continue
        one = _scalar(fd, depth)
        is_repeated = fd.label == FieldDescriptor.LABEL_REPEATED
        strategies[fd.name] = st.lists(one, max_size=4) if is_repeated else one
    return st.fixed_dictionaries({}, optional=strategies)


def build(cls: type[Message], fields: dict[str, Any]) -> Message:
    """The message from ``message_fields``' draw (nested dicts become messages)."""
    message = cls()
    _fill(message, fields)
    return message


def _fill(message: Message, fields: dict[str, Any]) -> None:
    for name, value in fields.items():
        fd = message.DESCRIPTOR.fields_by_name[name]
        if fd.type == FieldDescriptor.TYPE_MESSAGE:
            if fd.label == FieldDescriptor.LABEL_REPEATED:
                for item in value:
                    _fill(getattr(message, name).add(), item)
            else:
                _fill(getattr(message, name), value)
                getattr(message, name).SetInParent()
        elif fd.label == FieldDescriptor.LABEL_REPEATED:
            getattr(message, name).extend(value)
        elif fd.type == FieldDescriptor.TYPE_ENUM:
            setattr(message, name, value)  # open enums keep unknown numbers
        else:
            setattr(message, name, value)


@dataclass(frozen=True)
class Method:
    name: str
    call: Callable[..., Any]
    request: type[Message]
    streaming: bool


def methods(stub: Any, service: Any, module: Any) -> list[Method]:
    found = []
    for method in service.methods:
        request = getattr(module, method.input_type.name)
        found.append(
            Method(method.name, getattr(stub, method.name), request, method.server_streaming)
        )
    return found


# --------------------------------------------------------------------------- store digests


def digest(path: Path, leave_out: frozenset[str] = frozenset()) -> str:
    """SHA256 over every row of every table of the SQLite database at ``path``."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        h = hashlib.sha256()
        tables = db.execute("SELECT name FROM sqlite_master WHERE type='table' ORDER BY name")
        for (table,) in tables.fetchall():
            if table in leave_out:
                continue
            h.update(table.encode())
            for row in db.execute(f'SELECT * FROM "{table}"').fetchall():
                h.update(repr(row).encode())
        return h.hexdigest()
    finally:
        db.close()


@dataclass
class Tally:
    calls: int = 0
    refused: int = 0
    forbidden: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    by_status: dict[str, int] = field(default_factory=dict)


def call_once(
    method: Method, request: Message, db: Path, tally: Tally, leave_out: frozenset[str]
) -> None:
    """One call; the tally of its status and of what it changed when refused."""
    before = digest(db, leave_out)
    refused, code = _invoke(method, request)
    tally.calls += 1
    tally.by_status[code.name] = tally.by_status.get(code.name, 0) + 1
    if code in FORBIDDEN:
        tally.forbidden.append(f"{method.name}({request}) → {code.name}"[:500])
    if refused:
        tally.refused += 1
        if digest(db, leave_out) != before:
            tally.changed.append(f"{method.name}({request}) → {code.name}"[:500])


def _invoke(method: Method, request: Message) -> tuple[bool, grpc.StatusCode]:
    """(refused, status) of one call; a stream is read until its first event or a short
    deadline (a stream that waits for events is not refused)."""
    try:
        if method.streaming:
            stream = method.call(request, timeout=STREAM_TIMEOUT)
            try:
                next(iter(stream), None)
            finally:
                stream.cancel()
            return False, grpc.StatusCode.OK
        answer = method.call(request, timeout=TIMEOUT)
    except grpc.RpcError as exc:
        code = exc.code()
        if method.streaming and code in (
            grpc.StatusCode.DEADLINE_EXCEEDED,
            grpc.StatusCode.CANCELLED,
        ):
            return False, grpc.StatusCode.OK
        return True, code
    if isinstance(answer, signer_pb2.SignRoundResponse):
        signed = any(p.signatures for p in answer.signed_psbts)
        return bool(answer.refusals) and not signed, grpc.StatusCode.OK
    return False, grpc.StatusCode.OK


# --------------------------------------------------------------------------- the servers


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki(tmp_path_factory.mktemp("pki"))


@dataclass
class Coordinator:
    api: ApiServer
    db: Path


@pytest.fixture(scope="module")
def coordinator(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Coordinator]:
    directory = tmp_path_factory.mktemp("fuzz-coordinator")
    db = directory / "coordinator.db"
    engine: Engine = make_engine(f"sqlite:///{db}")
    migrate(engine)
    add_active_series(engine, SERIES, time.time())
    fund_pool(engine, 100 * BTC)
    config = make_config(pki, directory, f"sqlite:///{db}")
    signers = SignerPool.from_config(config)
    rounds = RoundEngine(config, engine, BitcoinRPC.from_config(config.chain), signers)
    api = ApiServer(pki, config, engine, rounds)  # type: ignore[arg-type]
    yield Coordinator(api, db)
    api.stop()
    signers.close()
    engine.dispose()


@dataclass
class Signer:
    daemon: SignerDaemon
    stub: signer_pb2_grpc.SignerServiceStub
    db: Path


@pytest.fixture(scope="module")
def signer(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Signer]:
    directory = tmp_path_factory.mktemp("fuzz-signer")
    keystore = write_keystore(directory / "keystore.json", master_key(0))
    config = write_config(directory, pki, "signer-0", emulator_backend(keystore), series=[SERIES])
    daemon = SignerDaemon(config)
    with SignerPool(signer_endpoints({"signer-0": daemon.address}), coordinator_tls(pki)) as pool:
        assert pool.register_series("signer-0", _regtest(), SERIES, TIMEOUT).registered
    pki.issue("coordinator", "coordinator")
    channel = grpc.secure_channel(daemon.address, pki.credentials())
    stub = signer_pb2_grpc.SignerServiceStub(channel)  # type: ignore[no-untyped-call]
    yield Signer(daemon, stub, daemon.data_dir / "signer.db")
    channel.close()
    assert daemon.stop() == 0, daemon.log_text()


def _fuzz(
    rows: Rows | None,
    service: str,
    found: list[Method],
    db: Path,
    leave_out: frozenset[str] = frozenset(),
    alive: Callable[[], bool] = lambda: True,
) -> Tally:
    tally = Tally()
    by_name = {m.name: m for m in found}
    strategies = {m.name: message_fields(m.request.DESCRIPTOR) for m in found}

    @settings(
        max_examples=CALLS,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
        derandomize=not FULL,
    )
    @given(data=st.data())
    def one(data: st.DataObject) -> None:
        name = data.draw(st.sampled_from(sorted(by_name)))
        method = by_name[name]
        request = build(method.request, data.draw(strategies[name]))
        call_once(method, request, db, tally, leave_out)

    started = time.monotonic()
    one()
    seconds = time.monotonic() - started
    if rows is not None:
        statuses = ", ".join(f"{k} {v}" for k, v in sorted(tally.by_status.items()))
        rows.add(
            f"{service}: generated calls",
            tally.calls,
            "calls",
            f">= {CALLS}",
            f"every method of {service} ({len(found)}), Hypothesis over each request's "
            f"descriptor; {seconds:.0f} s; statuses: {statuses}",
        )
        rows.add(
            f"{service}: INTERNAL or UNKNOWN answers, crashes",
            len(tally.forbidden) + (0 if alive() else 1),
            "calls",
            "<= 0",
            "; ".join(tally.forbidden[:3]) or "none; the server answered to the end",
        )
        rows.add(
            f"{service}: refused calls that changed the store",
            len(tally.changed),
            "calls",
            "<= 0",
            f"digest of every table before and after each of {tally.refused} refused calls"
            + (f"; left out: {', '.join(sorted(leave_out))} (the audit trail)" if leave_out else "")
            + (f"; {tally.changed[:3]}" if tally.changed else ""),
        )
    return tally


def _assert_clean(tally: Tally, alive: bool = True) -> None:
    assert tally.calls >= CALLS
    assert tally.forbidden == []
    assert tally.changed == []
    assert alive


# --------------------------------------------------------------------------- the tests


def test_generated_calls_to_the_coordinator_service_get_clear_answers_and_refusals_change_nothing(
    coordinator: Coordinator, rows: Rows
) -> None:
    stub = coordinator.api.client()
    found = methods(stub, coordinator_pb2.DESCRIPTOR.services_by_name["CoordinatorService"],
                    coordinator_pb2)  # fmt: skip
    _assert_clean(_fuzz(rows, "CoordinatorService", found, coordinator.db))


def test_generated_calls_to_the_admin_service_get_clear_answers_and_refusals_change_nothing(
    coordinator: Coordinator, rows: Rows
) -> None:
    stub = coordinator.api.admin()
    found = methods(stub, coordinator_pb2.DESCRIPTOR.services_by_name["AdminService"],
                    coordinator_pb2)  # fmt: skip
    _assert_clean(_fuzz(rows, "AdminService", found, coordinator.db))


def test_generated_calls_to_the_signer_service_get_clear_answers_and_refusals_change_nothing(
    signer: Signer, rows: Rows
) -> None:
    found = methods(signer.stub, signer_pb2.DESCRIPTOR.services_by_name["SignerService"],
                    signer_pb2)  # fmt: skip

    def alive() -> bool:
        return signer.daemon.proc.poll() is None

    tally = _fuzz(rows, "SignerService", found, signer.db, frozenset({"signing_log"}), alive)
    _assert_clean(tally, alive())


def _decoder_tally(rows: Rows, name: str, decode: Callable[[bytes], object], seed: bytes) -> None:
    """Raw and mutated bytes into ``decode``: only the core's errors (VpoolError) may come
    out."""
    other: list[str] = []
    count = 0

    @settings(max_examples=DECODER_INPUTS, deadline=None, database=None,
              suppress_health_check=list(HealthCheck), derandomize=not FULL)  # fmt: skip
    @given(
        st.one_of(
            st.binary(max_size=400),
            st.tuples(
                st.integers(min_value=0, max_value=max(0, len(seed) - 1)),
                st.binary(min_size=1, max_size=8),
                st.integers(min_value=0, max_value=8),
            ).map(lambda t: seed[: t[0]] + t[1] + seed[t[0] + t[2] :]),
            st.integers(min_value=0, max_value=len(seed)).map(lambda n: seed[:n]),
        )
    )
    def one(data: bytes) -> None:
        nonlocal count
        count += 1
        try:
            decode(data)
        except VpoolError:
            pass
        except Exception as exc:
            other.append(f"{data[:40].hex()}…: {exc.__class__.__name__}: {exc}"[:300])

    one()
    rows.add(
        f"{name}: inputs other than the core's errors",
        len(other),
        "inputs",
        "<= 0",
        f"{count} inputs: random bytes, a valid encoding with bytes replaced, truncations; "
        "only pool.errors.VpoolError may come out" + (f"; {other[:3]}" if other else ""),
    )
    assert other == []


def test_the_psbt_decoder_raises_only_its_own_errors(rows: Rows) -> None:
    from tests.reliability.seeds import sample_psbt

    _decoder_tally(rows, "PSBT decoder (Psbt.parse)", Psbt.parse, sample_psbt())


def test_the_manifest_decoders_raise_only_their_own_errors(rows: Rows) -> None:
    from tests.reliability.seeds import sample_manifest, sample_refund_manifest

    _decoder_tally(rows, "manifest decoder", decode_manifest, encode_manifest(sample_manifest()))
    _decoder_tally(rows, "refund manifest decoder", decode_refund_manifest,
                   sample_refund_manifest())  # fmt: skip
