import datetime

from google.api import annotations_pb2 as _annotations_pb2
from google.api import field_behavior_pb2 as _field_behavior_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.rpc import status_pb2 as _status_pb2
from paymesh.common.v1 import money_pb2 as _money_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SystemAccount(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SYSTEM_ACCOUNT_UNSPECIFIED: _ClassVar[SystemAccount]
    EXTERNAL_SETTLEMENT: _ClassVar[SystemAccount]
    FEES: _ClassVar[SystemAccount]
SYSTEM_ACCOUNT_UNSPECIFIED: SystemAccount
EXTERNAL_SETTLEMENT: SystemAccount
FEES: SystemAccount

class Wallet(_message.Message):
    __slots__ = ("wallet_id", "owner_id", "currency", "state", "posted_balance", "held_balance", "available_balance", "create_time", "update_time")
    class State(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        STATE_UNSPECIFIED: _ClassVar[Wallet.State]
        ACTIVE: _ClassVar[Wallet.State]
        FROZEN: _ClassVar[Wallet.State]
        CLOSED: _ClassVar[Wallet.State]
    STATE_UNSPECIFIED: Wallet.State
    ACTIVE: Wallet.State
    FROZEN: Wallet.State
    CLOSED: Wallet.State
    WALLET_ID_FIELD_NUMBER: _ClassVar[int]
    OWNER_ID_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    POSTED_BALANCE_FIELD_NUMBER: _ClassVar[int]
    HELD_BALANCE_FIELD_NUMBER: _ClassVar[int]
    AVAILABLE_BALANCE_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    wallet_id: str
    owner_id: str
    currency: str
    state: Wallet.State
    posted_balance: _money_pb2.Money
    held_balance: _money_pb2.Money
    available_balance: _money_pb2.Money
    create_time: _timestamp_pb2.Timestamp
    update_time: _timestamp_pb2.Timestamp
    def __init__(self, wallet_id: _Optional[str] = ..., owner_id: _Optional[str] = ..., currency: _Optional[str] = ..., state: _Optional[_Union[Wallet.State, str]] = ..., posted_balance: _Optional[_Union[_money_pb2.Money, _Mapping]] = ..., held_balance: _Optional[_Union[_money_pb2.Money, _Mapping]] = ..., available_balance: _Optional[_Union[_money_pb2.Money, _Mapping]] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class AccountRef(_message.Message):
    __slots__ = ("wallet_id", "system_account")
    WALLET_ID_FIELD_NUMBER: _ClassVar[int]
    SYSTEM_ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    wallet_id: str
    system_account: SystemAccount
    def __init__(self, wallet_id: _Optional[str] = ..., system_account: _Optional[_Union[SystemAccount, str]] = ...) -> None: ...

class Entry(_message.Message):
    __slots__ = ("entry_id", "wallet_id", "transaction_id", "payment_id", "amount", "balance_after", "description", "create_time")
    ENTRY_ID_FIELD_NUMBER: _ClassVar[int]
    WALLET_ID_FIELD_NUMBER: _ClassVar[int]
    TRANSACTION_ID_FIELD_NUMBER: _ClassVar[int]
    PAYMENT_ID_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    BALANCE_AFTER_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    entry_id: str
    wallet_id: str
    transaction_id: str
    payment_id: str
    amount: _money_pb2.Money
    balance_after: _money_pb2.Money
    description: str
    create_time: _timestamp_pb2.Timestamp
    def __init__(self, entry_id: _Optional[str] = ..., wallet_id: _Optional[str] = ..., transaction_id: _Optional[str] = ..., payment_id: _Optional[str] = ..., amount: _Optional[_Union[_money_pb2.Money, _Mapping]] = ..., balance_after: _Optional[_Union[_money_pb2.Money, _Mapping]] = ..., description: _Optional[str] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class Hold(_message.Message):
    __slots__ = ("hold_id", "wallet_id", "amount", "captured_amount", "state", "reference", "payment_id", "expire_time", "create_time")
    class State(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        STATE_UNSPECIFIED: _ClassVar[Hold.State]
        OPEN: _ClassVar[Hold.State]
        CAPTURED: _ClassVar[Hold.State]
        RELEASED: _ClassVar[Hold.State]
        EXPIRED: _ClassVar[Hold.State]
    STATE_UNSPECIFIED: Hold.State
    OPEN: Hold.State
    CAPTURED: Hold.State
    RELEASED: Hold.State
    EXPIRED: Hold.State
    HOLD_ID_FIELD_NUMBER: _ClassVar[int]
    WALLET_ID_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    CAPTURED_AMOUNT_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_FIELD_NUMBER: _ClassVar[int]
    PAYMENT_ID_FIELD_NUMBER: _ClassVar[int]
    EXPIRE_TIME_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    hold_id: str
    wallet_id: str
    amount: _money_pb2.Money
    captured_amount: _money_pb2.Money
    state: Hold.State
    reference: str
    payment_id: str
    expire_time: _timestamp_pb2.Timestamp
    create_time: _timestamp_pb2.Timestamp
    def __init__(self, hold_id: _Optional[str] = ..., wallet_id: _Optional[str] = ..., amount: _Optional[_Union[_money_pb2.Money, _Mapping]] = ..., captured_amount: _Optional[_Union[_money_pb2.Money, _Mapping]] = ..., state: _Optional[_Union[Hold.State, str]] = ..., reference: _Optional[str] = ..., payment_id: _Optional[str] = ..., expire_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class Posting(_message.Message):
    __slots__ = ("account", "amount")
    ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    account: AccountRef
    amount: _money_pb2.Money
    def __init__(self, account: _Optional[_Union[AccountRef, _Mapping]] = ..., amount: _Optional[_Union[_money_pb2.Money, _Mapping]] = ...) -> None: ...

class LedgerTransaction(_message.Message):
    __slots__ = ("transaction_id", "reference", "payment_id", "postings", "description", "create_time")
    TRANSACTION_ID_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_FIELD_NUMBER: _ClassVar[int]
    PAYMENT_ID_FIELD_NUMBER: _ClassVar[int]
    POSTINGS_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    transaction_id: str
    reference: str
    payment_id: str
    postings: _containers.RepeatedCompositeFieldContainer[Posting]
    description: str
    create_time: _timestamp_pb2.Timestamp
    def __init__(self, transaction_id: _Optional[str] = ..., reference: _Optional[str] = ..., payment_id: _Optional[str] = ..., postings: _Optional[_Iterable[_Union[Posting, _Mapping]]] = ..., description: _Optional[str] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class CreateWalletRequest(_message.Message):
    __slots__ = ("currency",)
    CURRENCY_FIELD_NUMBER: _ClassVar[int]
    currency: str
    def __init__(self, currency: _Optional[str] = ...) -> None: ...

class GetWalletRequest(_message.Message):
    __slots__ = ("wallet_id",)
    WALLET_ID_FIELD_NUMBER: _ClassVar[int]
    wallet_id: str
    def __init__(self, wallet_id: _Optional[str] = ...) -> None: ...

class ListWalletsRequest(_message.Message):
    __slots__ = ("page_size", "page_token", "owner_id")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    OWNER_ID_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    owner_id: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., owner_id: _Optional[str] = ...) -> None: ...

class ListWalletsResponse(_message.Message):
    __slots__ = ("wallets", "next_page_token")
    WALLETS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    wallets: _containers.RepeatedCompositeFieldContainer[Wallet]
    next_page_token: str
    def __init__(self, wallets: _Optional[_Iterable[_Union[Wallet, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class ListEntriesRequest(_message.Message):
    __slots__ = ("wallet_id", "page_size", "page_token")
    WALLET_ID_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    wallet_id: str
    page_size: int
    page_token: str
    def __init__(self, wallet_id: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListEntriesResponse(_message.Message):
    __slots__ = ("entries", "next_page_token")
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    entries: _containers.RepeatedCompositeFieldContainer[Entry]
    next_page_token: str
    def __init__(self, entries: _Optional[_Iterable[_Union[Entry, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class FreezeWalletRequest(_message.Message):
    __slots__ = ("wallet_id", "reason")
    WALLET_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    wallet_id: str
    reason: str
    def __init__(self, wallet_id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class UnfreezeWalletRequest(_message.Message):
    __slots__ = ("wallet_id", "reason")
    WALLET_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    wallet_id: str
    reason: str
    def __init__(self, wallet_id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class CloseWalletRequest(_message.Message):
    __slots__ = ("wallet_id",)
    WALLET_ID_FIELD_NUMBER: _ClassVar[int]
    wallet_id: str
    def __init__(self, wallet_id: _Optional[str] = ...) -> None: ...

class CreateHoldRequest(_message.Message):
    __slots__ = ("reference", "wallet_id", "amount", "payment_id", "ttl_seconds")
    REFERENCE_FIELD_NUMBER: _ClassVar[int]
    WALLET_ID_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    PAYMENT_ID_FIELD_NUMBER: _ClassVar[int]
    TTL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    reference: str
    wallet_id: str
    amount: _money_pb2.Money
    payment_id: str
    ttl_seconds: int
    def __init__(self, reference: _Optional[str] = ..., wallet_id: _Optional[str] = ..., amount: _Optional[_Union[_money_pb2.Money, _Mapping]] = ..., payment_id: _Optional[str] = ..., ttl_seconds: _Optional[int] = ...) -> None: ...

class GetHoldRequest(_message.Message):
    __slots__ = ("hold_id",)
    HOLD_ID_FIELD_NUMBER: _ClassVar[int]
    hold_id: str
    def __init__(self, hold_id: _Optional[str] = ...) -> None: ...

class CaptureHoldRequest(_message.Message):
    __slots__ = ("reference", "hold_id", "amount", "destination", "description")
    REFERENCE_FIELD_NUMBER: _ClassVar[int]
    HOLD_ID_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    DESTINATION_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    reference: str
    hold_id: str
    amount: _money_pb2.Money
    destination: AccountRef
    description: str
    def __init__(self, reference: _Optional[str] = ..., hold_id: _Optional[str] = ..., amount: _Optional[_Union[_money_pb2.Money, _Mapping]] = ..., destination: _Optional[_Union[AccountRef, _Mapping]] = ..., description: _Optional[str] = ...) -> None: ...

class CaptureHoldResponse(_message.Message):
    __slots__ = ("hold", "transaction")
    HOLD_FIELD_NUMBER: _ClassVar[int]
    TRANSACTION_FIELD_NUMBER: _ClassVar[int]
    hold: Hold
    transaction: LedgerTransaction
    def __init__(self, hold: _Optional[_Union[Hold, _Mapping]] = ..., transaction: _Optional[_Union[LedgerTransaction, _Mapping]] = ...) -> None: ...

class ReleaseHoldRequest(_message.Message):
    __slots__ = ("reference", "hold_id")
    REFERENCE_FIELD_NUMBER: _ClassVar[int]
    HOLD_ID_FIELD_NUMBER: _ClassVar[int]
    reference: str
    hold_id: str
    def __init__(self, reference: _Optional[str] = ..., hold_id: _Optional[str] = ...) -> None: ...

class PostTransactionRequest(_message.Message):
    __slots__ = ("reference", "postings", "payment_id", "description", "trace_context")
    class TraceContextEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    REFERENCE_FIELD_NUMBER: _ClassVar[int]
    POSTINGS_FIELD_NUMBER: _ClassVar[int]
    PAYMENT_ID_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    TRACE_CONTEXT_FIELD_NUMBER: _ClassVar[int]
    reference: str
    postings: _containers.RepeatedCompositeFieldContainer[Posting]
    payment_id: str
    description: str
    trace_context: _containers.ScalarMap[str, str]
    def __init__(self, reference: _Optional[str] = ..., postings: _Optional[_Iterable[_Union[Posting, _Mapping]]] = ..., payment_id: _Optional[str] = ..., description: _Optional[str] = ..., trace_context: _Optional[_Mapping[str, str]] = ...) -> None: ...

class PostTransactionsRequest(_message.Message):
    __slots__ = ("transactions",)
    TRANSACTIONS_FIELD_NUMBER: _ClassVar[int]
    transactions: _containers.RepeatedCompositeFieldContainer[PostTransactionRequest]
    def __init__(self, transactions: _Optional[_Iterable[_Union[PostTransactionRequest, _Mapping]]] = ...) -> None: ...

class PostTransactionsResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[PostTransactionResult]
    def __init__(self, results: _Optional[_Iterable[_Union[PostTransactionResult, _Mapping]]] = ...) -> None: ...

class PostTransactionResult(_message.Message):
    __slots__ = ("transaction", "error", "replayed")
    TRANSACTION_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    REPLAYED_FIELD_NUMBER: _ClassVar[int]
    transaction: LedgerTransaction
    error: _status_pb2.Status
    replayed: bool
    def __init__(self, transaction: _Optional[_Union[LedgerTransaction, _Mapping]] = ..., error: _Optional[_Union[_status_pb2.Status, _Mapping]] = ..., replayed: _Optional[bool] = ...) -> None: ...
