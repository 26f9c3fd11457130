"""The deterministic withdrawal algorithm, version 2: ``build_round(manifest) -> RoundPlan``.

The exact rules (and the voting-pool flaw each one replaces) are specified in
``docs/withdrawal-algorithm.md``; the rule names there (E1, R1, D1, P1, ...) are cited below.
Everything here is a pure function of the manifest: same manifest, same PSBT bytes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum, StrEnum

from pool.fees import largest_remainder
from pool.ladder import Rung, build_rungs
from pool.manifest import Manifest, Utxo, WithdrawalRequest, manifest_hash
from pool.psbt import Psbt, PsbtOutput
from pool.psbt_fields import global_xpubs, pool_input, pool_output
from pool.series import CHANGE, Series, SeriesState
from pool.tx import Transaction, TxIn, TxOut
from pool.weights import (
    P2WSH_OUTPUT_WEIGHT,
    fee_for_weight,
    multisig_input_weight,
    output_weight,
    tx_weight,
)

TX_VERSION = 2
SEQUENCE_RBF = 0xFFFFFFFD
"""nSequence of every input: final for locktime purposes, signals replaceability (BIP125)."""


class RequestStatus(StrEnum):
    SUCCESS = "success"
    """Paid by exactly one output of this round."""
    SPLIT = "split"
    """Paid by several outputs (the request did not fit in one transaction)."""
    DEFERRED = "deferred"
    """Not paid this round (not enough funds after fees); stays queued."""


@dataclass(frozen=True)
class PaidOutput:
    txid_hex: str
    vout: int
    amount: int


@dataclass(frozen=True)
class RequestOutcome:
    client_id: str
    request_id: str
    status: RequestStatus
    outputs: tuple[PaidOutput, ...]


@dataclass(frozen=True)
class ChangeOutput:
    series_id: int
    index: int
    vout: int
    value: int


@dataclass(frozen=True)
class PlannedTransaction:
    psbt: Psbt
    inputs: tuple[Utxo, ...]
    fee: int
    """Satoshis: inputs minus outputs."""
    max_weight: int
    """Upper bound of the signed transaction's weight (worst-case signatures)."""
    change: ChangeOutput | None
    fee_shares: tuple[tuple[str, int], ...]
    """(client id, satoshis) in ascending client id; the shares add up to ``fee``."""

    @property
    def txid_hex(self) -> str:
        return self.psbt.tx.txid_hex


@dataclass(frozen=True)
class RoundPlan:
    manifest_hash: bytes
    transactions: tuple[PlannedTransaction, ...]
    requests: tuple[RequestOutcome, ...]
    """Every request of the manifest, in processing order."""
    next_change_index: int
    """The active series' next unused change index after this round."""
    rungs: tuple[Rung, ...] = ()
    """The fee ladder (pool.ladder): every transaction's rungs, by transaction then step."""

    @property
    def psbts(self) -> tuple[Psbt, ...]:
        """What the signers sign, in order: the transactions, then the rungs."""
        return tuple(t.psbt for t in self.transactions) + tuple(r.psbt for r in self.rungs)

    @property
    def change_vouts(self) -> tuple[int | None, ...]:
        """The change output of each PSBT of ``psbts`` (a rung's is its transaction's)."""
        of_tx = [None if t.change is None else t.change.vout for t in self.transactions]
        return tuple(of_tx) + tuple(of_tx[r.of] for r in self.rungs)

    @property
    def total_fee(self) -> int:
        return sum(t.fee for t in self.transactions)

    def outcome(self, client_id: str, request_id: str) -> RequestOutcome:
        for outcome in self.requests:
            if (outcome.client_id, outcome.request_id) == (client_id, request_id):
                return outcome
        raise KeyError((client_id, request_id))


# --------------------------------------------------------------------------- eligibility (E)


def input_spend_cost(series: Series, fee_rate: int) -> int:
    """Satoshis it costs to spend one input of ``series`` at ``fee_rate`` (rounded up)."""
    return -(-multisig_input_weight(series.m, series.n) * fee_rate // 4000)


def eligible_inputs(manifest: Manifest) -> list[Utxo]:
    """Rules E1-E3: the UTXOs the round may spend, in canonical spending order."""
    series = manifest.series_by_id()
    eligible = [
        u
        for u in manifest.utxos
        if u.confirmations(manifest.tip_height) >= manifest.min_conf
        and u.value >= manifest.dust_limit
        and u.value > input_spend_cost(series[u.series_id], manifest.fee_rate)
    ]
    return sorted(
        eligible,
        key=lambda u: (
            0 if series[u.series_id].state is SeriesState.RETIRING else 1,
            u.height,
            u.outpoint.txid_hex,
            u.outpoint.vout,
        ),
    )


# --------------------------------------------------------------------------- packing (P)
#
# Packing is linear in the requests and inputs: the open transaction keeps running totals (never
# a sum over its parts), and the queue of inputs is a position in the spending-order list (taking
# an input moves it forward, a rollback moves it back). See docs/withdrawal-algorithm.md, section 6.


class _Insufficient(Exception):
    """The candidate requests cannot all be paid from the eligible inputs."""

    def __init__(self, request: WithdrawalRequest) -> None:
        super().__init__(request.key.hex())
        self.request = request
        """The request being placed when packing ran out of inputs."""


@dataclass
class _Part:
    request: WithdrawalRequest
    amount: int
    charges_extra: bool


@dataclass
class _Queue:
    """The eligible inputs in spending order; those before ``start`` are taken."""

    inputs: Sequence[Utxo]
    start: int = 0

    def __bool__(self) -> bool:
        return self.start < len(self.inputs)

    def first(self) -> Utxo:
        return self.inputs[self.start]

    def take(self) -> Utxo:
        self.start += 1
        return self.inputs[self.start - 1]


@dataclass
class _Draft:
    """A transaction under construction; its weight always counts one change output.

    ``in_value``, ``in_weight``, ``out_weight``, ``out_value`` and ``extra`` are running totals
    of ``inputs`` and ``parts``, kept by every method that changes them.
    """

    manifest: Manifest
    input_weights: Mapping[int, int]
    """Series id → weight of one of its inputs."""
    inputs: list[Utxo] = field(default_factory=list)
    parts: list[_Part] = field(default_factory=list)
    in_value: int = 0
    in_weight: int = 0
    out_weight: int = 0
    out_value: int = 0
    extra: int = 0
    """Extra fees charged in this transaction."""

    def input_weight(self, utxo: Utxo) -> int:
        return self.input_weights[utxo.series_id]

    def weight(self, extra_input: Utxo | None = None) -> int:
        n_in, w_in = len(self.inputs), self.in_weight
        if extra_input is not None:
            n_in, w_in = n_in + 1, w_in + self.input_weight(extra_input)
        return tx_weight(n_in, len(self.parts) + 1, w_in, self.out_weight + P2WSH_OUTPUT_WEIGHT)

    def fee(self) -> int:
        """Rule F1: fee at the manifest's rate for the worst-case weight, plus extra fees."""
        return fee_for_weight(self.weight(), self.manifest.fee_rate) + self.extra

    def funded(self) -> bool:
        return self.in_value >= self.out_value + self.fee()

    def overfull(self) -> bool:
        """Rule P2: heavier than ``max_weight`` or more payments than ``max_tx_payments``."""
        cap = self.manifest.max_tx_payments
        return self.weight() > self.manifest.max_weight or 0 < cap < len(self.parts)

    def can_take(self, utxo: Utxo) -> bool:
        """Rule P2: one more input keeps the draft within ``max_weight`` and ``max_tx_inputs``,
        and in one series (a transaction spends the coins of one series only)."""
        cap = self.manifest.max_tx_inputs
        return (
            self.weight(utxo) <= self.manifest.max_weight
            and not 0 < cap <= len(self.inputs)
            and (not self.inputs or self.inputs[0].series_id == utxo.series_id)
        )

    def add_part(self, part: _Part) -> None:
        self.parts.append(part)
        self.out_weight += output_weight(len(part.request.script_pubkey))
        self.out_value += part.amount
        if part.charges_extra:
            self.extra += part.request.extra_fee

    def set_last_amount(self, amount: int) -> None:
        part = self.parts[-1]
        self.out_value += amount - part.amount
        part.amount = amount

    def add_input(self, utxo: Utxo) -> None:
        self.inputs.append(utxo)
        self.in_value += utxo.value
        self.in_weight += self.input_weight(utxo)

    def rollback(self, n_inputs: int, n_parts: int, queue: _Queue) -> None:
        """Return to an earlier state; inputs taken since go back to the front of the queue."""
        queue.start -= len(self.inputs) - n_inputs
        for utxo in self.inputs[n_inputs:]:
            self.in_value -= utxo.value
            self.in_weight -= self.input_weight(utxo)
        for part in self.parts[n_parts:]:
            self.out_weight -= output_weight(len(part.request.script_pubkey))
            self.out_value -= part.amount
            if part.charges_extra:
                self.extra -= part.request.extra_fee
        del self.inputs[n_inputs:], self.parts[n_parts:]


class _Placed(Enum):
    FUNDED = 1
    """The whole remaining amount is in the draft and the draft is funded."""
    NO_ROOM = 2
    """The draft was closed as it stood before this part; retry in a new draft."""
    SPLIT = 3
    """Part of the amount is in the draft, which is full and closed."""


def _place(
    draft: _Draft, request: WithdrawalRequest, remaining: int, first: bool, queue: _Queue
) -> tuple[_Placed, int]:
    """Rules P2-P4 for one output: add it, fund it, roll back or split when the draft is full."""
    manifest = draft.manifest
    n_inputs, n_parts = len(draft.inputs), len(draft.parts)
    draft.add_part(_Part(request, remaining, charges_extra=first))
    if draft.overfull():
        draft.rollback(n_inputs, n_parts, queue)
        return _Placed.NO_ROOM, 0
    while not draft.funded():
        if not queue:
            raise _Insufficient(request)
        if draft.can_take(queue.first()):
            draft.add_input(queue.take())
            continue
        if n_parts:  # P3: the draft holds earlier outputs: close it without this one
            draft.rollback(n_inputs, n_parts, queue)
            return _Placed.NO_ROOM, 0
        # P4: this output alone fills the draft: pay what the draft's inputs can carry.
        draft.set_last_amount(0)
        amount = draft.in_value - draft.fee()
        if 0 < remaining - amount < manifest.dust_limit:
            amount = remaining - manifest.dust_limit
        if amount < manifest.dust_limit:
            raise _Insufficient(request)
        draft.set_last_amount(amount)
        return _Placed.SPLIT, amount
    return _Placed.FUNDED, remaining


def _input_weights(manifest: Manifest) -> dict[int, int]:
    return {s.id: multisig_input_weight(s.m, s.n) for s in manifest.series}


def _pack(
    manifest: Manifest, requests: Iterable[WithdrawalRequest], inputs: Sequence[Utxo]
) -> list[_Draft]:
    """Rule P1: fill transactions request by request, in processing order."""
    weights = _input_weights(manifest)
    queue = _Queue(inputs)
    drafts: list[_Draft] = []
    draft = _Draft(manifest, weights)
    for request in requests:
        remaining, first = request.amount, True
        while remaining:
            placed, amount = _place(draft, request, remaining, first, queue)
            if placed is not _Placed.FUNDED:
                if not draft.parts:
                    raise _Insufficient(request)  # cannot happen within the weight bounds
                drafts.append(draft)
                draft = _Draft(manifest, weights)
            if placed is not _Placed.NO_ROOM:
                remaining -= amount
                first = first and not amount
    if draft.parts:
        drafts.append(draft)
    return drafts


# --------------------------------------------------------------------------- deferral (D)


def _select(
    manifest: Manifest, inputs: Sequence[Utxo]
) -> tuple[list[_Draft], list[WithdrawalRequest]]:
    """Rule D1: defer the largest request (ties: lowest request key) until the rest packs.

    Packs that surely fail are skipped (each skip is proven in docs/withdrawal-algorithm.md,
    section 6), so the requests deferred are exactly those of D1 with one pack per deferral:

    - while ``_surely_short`` holds, no packing of the candidates can be funded;
    - a pack that ran out of inputs while placing request F fails again at F, step for step,
      once a request after F (in processing order) is deferred.
    """
    victims = sorted(manifest.requests, key=lambda r: (-r.amount, r.key))
    deferred_keys: set[bytes] = set()
    deferred: list[WithdrawalRequest] = []
    bound = _Bound(manifest, inputs)

    def defer_largest() -> WithdrawalRequest:
        victim = victims[len(deferred)]
        deferred.append(victim)
        deferred_keys.add(victim.key)
        bound.remove(victim)
        return victim

    while len(deferred) < len(victims) and bound.surely_short():
        defer_largest()
    while True:
        candidates = (r for r in manifest.requests if r.key not in deferred_keys)
        try:
            return _pack(manifest, candidates, inputs), deferred
        except _Insufficient as failure:
            while defer_largest().key > failure.request.key:
                pass


class _Bound:
    """A necessary condition for the candidates to pack, updated in O(1) per deferral.

    Every transaction of a successful pack is funded when it closes, so the inputs it spends
    bring at least its outputs, its extra fees and its fee; its fee is at least ``fee_rate ×
    weight / 4000``, its weight at least its inputs' and outputs' weights plus the fixed part and
    the change output (``TX_OVERHEAD``), and each request has at least one output. Each eligible
    input is worth more than its own spend cost, so spending every eligible input is the best
    case: if even that cannot pay the candidates, no pack of them succeeds.
    """

    def __init__(self, manifest: Manifest, inputs: Sequence[Utxo]) -> None:
        weights = _input_weights(manifest)
        self.fee_rate = manifest.fee_rate
        self.net_inputs = 4000 * sum(u.value for u in inputs) - self.fee_rate * sum(
            weights[u.series_id] for u in inputs
        )
        """4000 × (value of every eligible input − fee for its weight)."""
        self.count = len(manifest.requests)
        self.amounts = sum(r.amount + r.extra_fee for r in manifest.requests)
        self.out_weight = sum(output_weight(len(r.script_pubkey)) for r in manifest.requests)

    def remove(self, request: WithdrawalRequest) -> None:
        self.count -= 1
        self.amounts -= request.amount + request.extra_fee
        self.out_weight -= output_weight(len(request.script_pubkey))

    def surely_short(self) -> bool:
        if not self.count:
            return False
        needed = 4000 * self.amounts + self.fee_rate * (self.out_weight + TX_OVERHEAD)
        return needed > self.net_inputs


TX_OVERHEAD = tx_weight(0, 1, 0, P2WSH_OUTPUT_WEIGHT)
"""The smallest weight of a transaction besides its inputs and payments: the fixed fields, the
smallest counts and the change output that rule F1 always counts."""


# --------------------------------------------------------------------------- transactions (T)


def _psbt_for(manifest: Manifest, draft: _Draft, change: tuple[int, int, int] | None) -> Psbt:
    """Rules T1-T4: the unsigned transaction and its PSBT fields."""
    series = manifest.series_by_id()
    tx_inputs = tuple(TxIn(u.outpoint, SEQUENCE_RBF) for u in draft.inputs)
    outputs = [TxOut(p.amount, p.request.script_pubkey) for p in draft.parts]
    psbt_outputs = [PsbtOutput() for _ in draft.parts]
    used_series = {u.series_id for u in draft.inputs}  # one series (rule P2)
    if change is not None:
        series_id, index, value = change
        derived = series[series_id].derive(CHANGE, index)
        outputs.append(TxOut(value, derived.script_pubkey))
        # T2: key paths only on change to the series spent from; a sweep's output to the active
        # series has none, so that every device shows it as the payment it is.
        psbt_outputs.append(pool_output(derived) if series_id in used_series else PsbtOutput())
    psbt_inputs = tuple(
        pool_input(series[u.series_id], u.branch, u.index, u.value) for u in draft.inputs
    )
    xpubs = global_xpubs((series[i] for i in used_series), manifest.net)
    tx = Transaction(TX_VERSION, tx_inputs, tuple(outputs), manifest.tip_height)
    return Psbt(tx=tx, xpubs=xpubs, inputs=psbt_inputs, outputs=tuple(psbt_outputs))


def _paid_by_client(draft: _Draft) -> dict[str, int]:
    amounts: dict[str, int] = {}
    for part in draft.parts:
        client = part.request.client_id
        amounts[client] = amounts.get(client, 0) + part.amount
    return amounts


def _fee_shares(draft: _Draft, fee: int) -> tuple[tuple[str, int], ...]:
    """Rule A1: extra fees to their clients, the rest in proportion to the amounts paid."""
    amounts: dict[str, int] = {}
    extras: dict[str, int] = {}
    for part in draft.parts:
        client = part.request.client_id
        amounts[client] = amounts.get(client, 0) + part.amount
        if part.charges_extra:
            extras[client] = extras.get(client, 0) + part.request.extra_fee
    shares = largest_remainder(fee - sum(extras.values()), amounts)
    return tuple(
        (client, shares[client] + extras.get(client, 0))
        for client in sorted(shares, key=str.encode)
    )


def build_round(manifest: Manifest) -> RoundPlan:
    """Build the round's unsigned transactions from the manifest; pure and deterministic."""
    inputs = eligible_inputs(manifest)
    drafts, deferred = _select(manifest, inputs)
    active = manifest.active_series
    change_index = manifest.next_change_index(active.id)
    planned: list[PlannedTransaction] = []
    rungs: list[Rung] = []
    paid: dict[bytes, list[PaidOutput]] = {}
    for draft in drafts:
        max_weight = draft.weight()
        change_value = draft.in_value - draft.out_value - draft.fee()
        change = None
        if change_value >= manifest.dust_limit:  # C1: dust change is left to the fee
            change = (active.id, change_index, change_value)
        else:
            change_value = 0
        psbt = _psbt_for(manifest, draft, change)
        fee = draft.in_value - draft.out_value - change_value
        txid = psbt.tx.txid_hex
        for vout, part in enumerate(draft.parts):
            paid.setdefault(part.request.key, []).append(PaidOutput(txid, vout, part.amount))
        change_output = None
        if change is not None:
            change_output = ChangeOutput(active.id, change_index, len(draft.parts), change_value)
            change_index += 1
        planned.append(
            PlannedTransaction(
                psbt=psbt,
                inputs=tuple(draft.inputs),
                fee=fee,
                max_weight=max_weight,
                change=change_output,
                fee_shares=_fee_shares(draft, fee),
            )
        )
        rungs += build_rungs(
            of=len(planned) - 1,
            psbt=psbt,
            change_vout=None if change_output is None else change_output.vout,
            fee=fee,
            max_weight=max_weight,
            fee_shares=planned[-1].fee_shares,
            paid_by_client=_paid_by_client(draft),
            fee_rate=manifest.fee_rate,
            ladder_rungs=manifest.ladder_rungs,
            ladder_step=manifest.ladder_step,
            dust_limit=manifest.dust_limit,
        )
    deferred_keys = {r.key for r in deferred}
    outcomes = []
    for request in manifest.requests:
        outputs = tuple(paid.get(request.key, ()))
        if request.key in deferred_keys:
            status = RequestStatus.DEFERRED
        elif len(outputs) == 1:
            status = RequestStatus.SUCCESS
        else:
            status = RequestStatus.SPLIT
        outcomes.append(RequestOutcome(request.client_id, request.request_id, status, outputs))
    return RoundPlan(
        manifest_hash=manifest_hash(manifest),
        transactions=tuple(planned),
        requests=tuple(outcomes),
        next_change_index=change_index,
        rungs=tuple(rungs),
    )
