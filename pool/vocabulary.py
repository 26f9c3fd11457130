"""The words both daemons and the protocol share: round kinds, refusal reasons and their scopes.

Defined once, here in the pure core: the signer's policy refuses with a ``Reason``, the protocol
carries its string (``signer_pb2.Refusal.reason_code``), and the coordinator reads it back and
acts on its ``finality``. The strings are stable: clients match on them.
"""

from __future__ import annotations

from enum import Enum, StrEnum


class RoundKind(StrEnum):
    """The kind of a round; each kind has its own policy. Written in the audit trail."""

    WITHDRAWAL = "withdrawal"
    REFUND = "refund"


class Reason(StrEnum):
    """Why a round (or a request of it) is refused. Stable strings: clients match on them.

    Each has a finality (``FINALITY``): what asking again can change."""

    OVERSIZED_MESSAGE = "OVERSIZED_MESSAGE"
    ROUND_TOO_LARGE = "ROUND_TOO_LARGE"
    """The manifest has more requests or UTXOs than this signer's ``max_requests`` or
    ``max_inputs`` (checked before decoding), or a transaction of the round passes what this
    signer's device or its person takes (inputs, outputs, PSBT bytes, payments to review: the
    manifest's ``max_tx_inputs`` and ``max_tx_payments`` were not set low enough). Final for
    this manifest: only a smaller round can pass."""
    MALFORMED_MANIFEST = "MALFORMED_MANIFEST"
    MALFORMED_PSBT = "MALFORMED_PSBT"
    WRONG_NETWORK = "WRONG_NETWORK"
    SERIES_NOT_REGISTERED = "SERIES_NOT_REGISTERED"
    SERIES_MISMATCH = "SERIES_MISMATCH"
    NOT_A_COSIGNER = "NOT_A_COSIGNER"
    PSBT_COUNT_MISMATCH = "PSBT_COUNT_MISMATCH"
    MANIFEST_MISMATCH = "MANIFEST_MISMATCH"
    INPUT_NOT_IN_POOL = "INPUT_NOT_IN_POOL"
    EXTRA_INPUT = "EXTRA_INPUT"
    MISSING_INPUT = "MISSING_INPUT"
    UNKNOWN_INPUT = "UNKNOWN_INPUT"
    INPUT_UTXO_MISMATCH = "INPUT_UTXO_MISMATCH"
    WITNESS_SCRIPT_MISMATCH = "WITNESS_SCRIPT_MISMATCH"
    DERIVATION_MISMATCH = "DERIVATION_MISMATCH"
    SIGHASH_NOT_ALL = "SIGHASH_NOT_ALL"
    EXTRA_OUTPUT = "EXTRA_OUTPUT"
    MISSING_OUTPUT = "MISSING_OUTPUT"
    AMOUNT_MISMATCH = "AMOUNT_MISMATCH"
    DESTINATION_MISMATCH = "DESTINATION_MISMATCH"
    CHANGE_NOT_TO_POOL = "CHANGE_NOT_TO_POOL"
    TX_FIELDS_MISMATCH = "TX_FIELDS_MISMATCH"
    PSBT_MISMATCH = "PSBT_MISMATCH"
    FEE_RATE_ABOVE_LIMIT = "FEE_RATE_ABOVE_LIMIT"
    FEE_ABOVE_LIMIT = "FEE_ABOVE_LIMIT"
    REQUEST_LIMIT_EXCEEDED = "REQUEST_LIMIT_EXCEEDED"
    ROUND_LIMIT_EXCEEDED = "ROUND_LIMIT_EXCEEDED"
    DAILY_LIMIT_EXCEEDED = "DAILY_LIMIT_EXCEEDED"
    DESTINATION_DENIED = "DESTINATION_DENIED"
    DESTINATION_NOT_ALLOWED = "DESTINATION_NOT_ALLOWED"
    REFUND_DESTINATION_NOT_REGISTERED = "REFUND_DESTINATION_NOT_REGISTERED"
    REFUND_ADDRESS_UNKNOWN = "REFUND_ADDRESS_UNKNOWN"
    REFUND_DESTINATION_NOT_SENDER = "REFUND_DESTINATION_NOT_SENDER"
    OPERATOR_REFUNDS_NOT_ALLOWED = "OPERATOR_REFUNDS_NOT_ALLOWED"
    DOUBLE_SIGN = "DOUBLE_SIGN"
    SIGNING_IN_PROGRESS = "SIGNING_IN_PROGRESS"
    """An input is spent by another round this signer approved and whose device has not
    answered yet. Not final: ask again once that round is signed (then a safe replacement of
    it may pass) or has failed. Scoped to the input."""
    CANCEL_OF_UNSIGNED = "CANCEL_OF_UNSIGNED"
    """A cancel round replaces a transaction this signer did not sign under the cancel's
    original manifest: there is nothing of its own to cancel, and signing would pay the kept
    payments outside its limits. Final for this manifest."""
    CANCEL_NOT_SETTLED = "CANCEL_NOT_SETTLED"
    """The round pays a request an operator cancelled (pool.cancel version 2) out of a
    transaction this signer signed, and the replacement that dropped it is not confirmed on the
    signer's node yet: the original may still be mined. Transient: it passes once the
    replacement is confirmed (and never if the original is). Scoped to the request."""
    SAME_TX_OTHER_MANIFEST = "SAME_TX_OTHER_MANIFEST"
    """This very transaction was signed under another manifest (a manifest that rebuilds to the
    same txid while claiming other facts, e.g. other input amounts). Final for this manifest:
    only the manifest it was signed under may have it signed again."""
    DESTINATION_LIMIT_EXCEEDED = "DESTINATION_LIMIT_EXCEEDED"
    """The payments of one round to one scriptPubKey would pass ``max_destination_amount``.
    Transient: the request fits in a later round."""
    DESTINATION_DAILY_LIMIT_EXCEEDED = "DESTINATION_DAILY_LIMIT_EXCEEDED"
    """The payments to one scriptPubKey in the rolling window would pass
    ``max_destination_daily_amount``. Transient: the window moves on."""
    TX_FEE_RATE_ABOVE_LIMIT = "TX_FEE_RATE_ABOVE_LIMIT"
    """A transaction's whole fee (network fee, dust left to the fee, extra fees) per worst-case
    signed vsize is above ``max_fee_rate``. Transient for the request whose extra fee causes it
    (scope request); otherwise for the round."""
    REFUND_DAILY_LIMIT_EXCEEDED = "REFUND_DAILY_LIMIT_EXCEEDED"
    """The refunds signed in the rolling window would pass ``max_daily_refund_amount``.
    Transient: the window moves on."""
    MOVE_DAILY_LIMIT_EXCEEDED = "MOVE_DAILY_LIMIT_EXCEEDED"
    """The value moved to another approved series in the rolling window would pass
    ``max_daily_move_amount``. Transient: the window moves on."""
    NOTHING_TO_SIGN = "NOTHING_TO_SIGN"
    DEVICE_REFUSED = "DEVICE_REFUSED"
    DEVICE_ERROR = "DEVICE_ERROR"
    DEVICE_TIMEOUT = "DEVICE_TIMEOUT"
    BAD_DEVICE_SIGNATURE = "BAD_DEVICE_SIGNATURE"
    # The manifest's facts against this signer's own node (signer.chain_checks).
    INPUT_NOT_ON_CHAIN = "INPUT_NOT_ON_CHAIN"
    """An input is not a confirmed unspent output on this signer's node (spent, unknown, or
    only in a mempool). Not final: a reorganisation or a lagging node may change it; the
    coordinator should rebuild without the coin. Scoped to the input."""
    INPUT_AMOUNT_MISMATCH = "INPUT_AMOUNT_MISMATCH"
    """An input's amount (the manifest's, in the PSBT's witness UTXO) differs from the value of
    the output on this signer's node. Final for this manifest. Scoped to the input."""
    INPUT_SCRIPT_MISMATCH = "INPUT_SCRIPT_MISMATCH"
    """An input's scriptPubKey (derived from the manifest's series, branch and index) differs
    from the output's on this signer's node. Final for this manifest. Scoped to the input."""
    INPUT_HEIGHT_MISMATCH = "INPUT_HEIGHT_MISMATCH"
    """The manifest's confirmation height of an input differs from this signer's node. Not final
    (a reorganisation moves coins). Scoped to the input."""
    INPUT_IMMATURE = "INPUT_IMMATURE"
    """An input has fewer confirmations on this signer's node than its own ``chain.min_conf``
    (or a coinbase fewer than 100). Not final: it matures. Scoped to the input."""
    TIP_AHEAD_OF_NODE = "TIP_AHEAD_OF_NODE"
    """The manifest's pinned tip is above this signer's tip: its node is behind, or the tip is
    invented. Not final."""
    TIP_NOT_ON_CHAIN = "TIP_NOT_ON_CHAIN"
    """The manifest's pinned tip (height, hash) is not a block of this signer's best chain. Not
    final (the signer's node may follow later), but never signed as it is."""
    TIP_TOO_OLD = "TIP_TOO_OLD"
    """The manifest's pinned tip is more than ``chain.max_tip_lag`` blocks behind this signer's
    tip. Final for this manifest: rebuild on a newer tip."""
    LOCKTIME_IN_FUTURE = "LOCKTIME_IN_FUTURE"
    """A transaction's nLockTime is not below the next block of this signer's chain (it could not
    be mined now). Not final."""
    PREVIOUS_TX_UNAVAILABLE = "PREVIOUS_TX_UNAVAILABLE"
    """This signer's node does not give the transaction an input spends (for the device's
    ``non_witness_utxo``; the node needs a transaction index). Not final. Scoped to the input."""
    PREVIOUS_TX_MISMATCH = "PREVIOUS_TX_MISMATCH"
    """The previous transaction this signer's node gave does not hash to the input's txid, or its
    output differs from the input's amount and script: the node is not to be trusted. Scoped to
    the input."""
    CHAIN_UNAVAILABLE = "CHAIN_UNAVAILABLE"
    """This signer's node is unreachable, refused the credentials, is starting, or answered
    something unexpected: nothing can be checked, so nothing is signed. Not final: try later."""
    CHAIN_NOT_CONFIGURED = "CHAIN_NOT_CONFIGURED"
    """This signer runs without a node (``chain.dev_without_node``, development only): it
    signs nothing. Final until its operator configures a node."""
    # Deposit acknowledgements (signer.acknowledgements) and the refunds they forbid.
    DEPOSIT_CREDITED = "DEPOSIT_CREDITED"
    """A refund of a deposit this signer acknowledged (AcknowledgeDeposits): the coordinator may
    have credited it. Final: an acknowledgement is never taken back."""
    DEPOSIT_REFUNDED = "DEPOSIT_REFUNDED"
    """(AcknowledgeDeposits) This signer signed a spend of the deposit (its refund): it is never
    acknowledged. Final."""
    DEPOSIT_NOT_FOUND = "DEPOSIT_NOT_FOUND"
    """(AcknowledgeDeposits) The signer's own node has no confirmed unspent output at the
    deposit's outpoint. Not final: the node may be behind, or the deposit not yet mined."""
    DEPOSIT_UNCONFIRMED = "DEPOSIT_UNCONFIRMED"
    """(AcknowledgeDeposits) The deposit has fewer confirmations on the signer's node than its
    ``deposit_confirmations``. Not final: ask again after more blocks."""
    DEPOSIT_ADDRESS_MISMATCH = "DEPOSIT_ADDRESS_MISMATCH"
    """(AcknowledgeDeposits) The output does not pay the receive address the claim names (as this
    signer derives it). Final."""
    DEPOSIT_VALUE_MISMATCH = "DEPOSIT_VALUE_MISMATCH"
    """(AcknowledgeDeposits) The output's value is not the value claimed. Final."""
    DEPOSIT_ADDRESS_NOT_REGISTERED = "DEPOSIT_ADDRESS_NOT_REGISTERED"
    """(AcknowledgeDeposits) The receive address was never registered with this signer
    (RegisterDepositAddress), or its series is not. Final."""
    DEPOSIT_CLAIM_MISMATCH = "DEPOSIT_CLAIM_MISMATCH"
    """(AcknowledgeDeposits) The outpoint was acknowledged before with another series, index or
    value. Final."""


class Scope(StrEnum):
    ROUND = "round"
    REQUEST = "request"
    """One withdrawal request (``client_id``, ``request_id``), or in a refund round one deposit:
    ``request_id`` is its outpoint ``txid:vout`` (txid in display hex), ``client_id`` empty."""
    INPUT = "input"


class Finality(Enum):
    """What asking again can change about a refusal."""

    TRANSIENT = "transient"
    """The same request may pass later: the node catches up, a window moves on, a device comes
    back, a coin matures. Ask again (the coordinator keeps the request queued)."""
    MANIFEST = "manifest"
    """This manifest never passes: it is wrong, too large, or stale. A rebuilt round may pass."""
    REQUEST = "request"
    """The request itself never passes with this signer (a limit it alone exceeds, a denied
    destination, a deposit already credited): the coordinator rejects it for good."""


FINALITY: dict[Reason, Finality] = {
    **{reason: Finality.MANIFEST for reason in Reason},
    **{
        reason: Finality.TRANSIENT
        for reason in (
            Reason.CHAIN_UNAVAILABLE,
            Reason.INPUT_NOT_ON_CHAIN,
            Reason.INPUT_HEIGHT_MISMATCH,
            Reason.INPUT_IMMATURE,
            Reason.TIP_AHEAD_OF_NODE,
            Reason.TIP_NOT_ON_CHAIN,
            Reason.LOCKTIME_IN_FUTURE,
            Reason.PREVIOUS_TX_UNAVAILABLE,
            Reason.DESTINATION_LIMIT_EXCEEDED,
            Reason.DESTINATION_DAILY_LIMIT_EXCEEDED,
            Reason.TX_FEE_RATE_ABOVE_LIMIT,
            Reason.REFUND_DAILY_LIMIT_EXCEEDED,
            Reason.MOVE_DAILY_LIMIT_EXCEEDED,
            Reason.DAILY_LIMIT_EXCEEDED,
            Reason.ROUND_LIMIT_EXCEEDED,
            Reason.DEPOSIT_NOT_FOUND,
            Reason.DEPOSIT_UNCONFIRMED,
            Reason.DEVICE_ERROR,
            Reason.DEVICE_TIMEOUT,
            Reason.DOUBLE_SIGN,
            Reason.SIGNING_IN_PROGRESS,
            Reason.CANCEL_NOT_SETTLED,
            Reason.REFUND_ADDRESS_UNKNOWN,
            Reason.SERIES_NOT_REGISTERED,
        )
    },
    **{
        reason: Finality.REQUEST
        for reason in (
            Reason.REQUEST_LIMIT_EXCEEDED,
            Reason.DESTINATION_DENIED,
            Reason.DESTINATION_NOT_ALLOWED,
            Reason.REFUND_DESTINATION_NOT_REGISTERED,
            Reason.REFUND_DESTINATION_NOT_SENDER,
            Reason.OPERATOR_REFUNDS_NOT_ALLOWED,
            Reason.DEPOSIT_CREDITED,
            Reason.DEPOSIT_REFUNDED,
            Reason.DEPOSIT_ADDRESS_MISMATCH,
            Reason.DEPOSIT_VALUE_MISMATCH,
            Reason.DEPOSIT_ADDRESS_NOT_REGISTERED,
            Reason.DEPOSIT_CLAIM_MISMATCH,
        )
    },
}
"""Every reason's finality (the docstrings above say why)."""


def finality(code: str) -> Finality:
    """The finality of a reason code as a signer sent it; an unknown code (a newer signer) is
    transient: nothing is rejected for good on a word this side does not know."""
    try:
        return FINALITY[Reason(code)]
    except ValueError:
        return Finality.TRANSIENT
