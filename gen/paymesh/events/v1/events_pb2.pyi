import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from paymesh.auth.v1 import auth_pb2 as _auth_pb2
from paymesh.common.v1 import money_pb2 as _money_pb2
from paymesh.payment.v1 import payment_pb2 as _payment_pb2
from paymesh.wallet.v1 import wallet_pb2 as _wallet_pb2
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Event(_message.Message):
    __slots__ = ("id", "type", "aggregate_type", "aggregate_id", "sequence", "occurred_at", "producer", "user_registered", "wallet_changed", "wallet_posted", "payment_changed", "refund_changed", "payout_changed")
    ID_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    AGGREGATE_TYPE_FIELD_NUMBER: _ClassVar[int]
    AGGREGATE_ID_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    OCCURRED_AT_FIELD_NUMBER: _ClassVar[int]
    PRODUCER_FIELD_NUMBER: _ClassVar[int]
    USER_REGISTERED_FIELD_NUMBER: _ClassVar[int]
    WALLET_CHANGED_FIELD_NUMBER: _ClassVar[int]
    WALLET_POSTED_FIELD_NUMBER: _ClassVar[int]
    PAYMENT_CHANGED_FIELD_NUMBER: _ClassVar[int]
    REFUND_CHANGED_FIELD_NUMBER: _ClassVar[int]
    PAYOUT_CHANGED_FIELD_NUMBER: _ClassVar[int]
    id: str
    type: str
    aggregate_type: str
    aggregate_id: str
    sequence: int
    occurred_at: _timestamp_pb2.Timestamp
    producer: str
    user_registered: UserRegistered
    wallet_changed: WalletChanged
    wallet_posted: WalletPosted
    payment_changed: PaymentChanged
    refund_changed: RefundChanged
    payout_changed: PayoutChanged
    def __init__(self, id: _Optional[str] = ..., type: _Optional[str] = ..., aggregate_type: _Optional[str] = ..., aggregate_id: _Optional[str] = ..., sequence: _Optional[int] = ..., occurred_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., producer: _Optional[str] = ..., user_registered: _Optional[_Union[UserRegistered, _Mapping]] = ..., wallet_changed: _Optional[_Union[WalletChanged, _Mapping]] = ..., wallet_posted: _Optional[_Union[WalletPosted, _Mapping]] = ..., payment_changed: _Optional[_Union[PaymentChanged, _Mapping]] = ..., refund_changed: _Optional[_Union[RefundChanged, _Mapping]] = ..., payout_changed: _Optional[_Union[PayoutChanged, _Mapping]] = ...) -> None: ...

class UserRegistered(_message.Message):
    __slots__ = ("user",)
    USER_FIELD_NUMBER: _ClassVar[int]
    user: _auth_pb2.User
    def __init__(self, user: _Optional[_Union[_auth_pb2.User, _Mapping]] = ...) -> None: ...

class WalletChanged(_message.Message):
    __slots__ = ("wallet", "reason")
    WALLET_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    wallet: _wallet_pb2.Wallet
    reason: str
    def __init__(self, wallet: _Optional[_Union[_wallet_pb2.Wallet, _Mapping]] = ..., reason: _Optional[str] = ...) -> None: ...

class WalletPosted(_message.Message):
    __slots__ = ("entry", "owner_id", "available_balance")
    ENTRY_FIELD_NUMBER: _ClassVar[int]
    OWNER_ID_FIELD_NUMBER: _ClassVar[int]
    AVAILABLE_BALANCE_FIELD_NUMBER: _ClassVar[int]
    entry: _wallet_pb2.Entry
    owner_id: str
    available_balance: _money_pb2.Money
    def __init__(self, entry: _Optional[_Union[_wallet_pb2.Entry, _Mapping]] = ..., owner_id: _Optional[str] = ..., available_balance: _Optional[_Union[_money_pb2.Money, _Mapping]] = ...) -> None: ...

class PaymentChanged(_message.Message):
    __slots__ = ("payment", "previous_state")
    PAYMENT_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_STATE_FIELD_NUMBER: _ClassVar[int]
    payment: _payment_pb2.Payment
    previous_state: _payment_pb2.Payment.State
    def __init__(self, payment: _Optional[_Union[_payment_pb2.Payment, _Mapping]] = ..., previous_state: _Optional[_Union[_payment_pb2.Payment.State, str]] = ...) -> None: ...

class RefundChanged(_message.Message):
    __slots__ = ("refund", "payer_id", "payee_id")
    REFUND_FIELD_NUMBER: _ClassVar[int]
    PAYER_ID_FIELD_NUMBER: _ClassVar[int]
    PAYEE_ID_FIELD_NUMBER: _ClassVar[int]
    refund: _payment_pb2.Refund
    payer_id: str
    payee_id: str
    def __init__(self, refund: _Optional[_Union[_payment_pb2.Refund, _Mapping]] = ..., payer_id: _Optional[str] = ..., payee_id: _Optional[str] = ...) -> None: ...

class PayoutChanged(_message.Message):
    __slots__ = ("payout",)
    PAYOUT_FIELD_NUMBER: _ClassVar[int]
    payout: _payment_pb2.Payout
    def __init__(self, payout: _Optional[_Union[_payment_pb2.Payout, _Mapping]] = ...) -> None: ...
