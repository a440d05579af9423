"""The store's interface: the `Store` protocol, its value types and its exception family.

The bot talks to one small interface, `Store`; `bot.store.sqlite.SqliteStore` implements it with
one SQLite database in ``DATA_DIR``, `bot.store.postgres.PostgresStore` with a PostgreSQL database
shared by several replicas (``STORE_URL``). Another backend only has to implement `Store`.

Kept originals (📄 Original) belong to the store too (`Store.originals`, a `KeptOriginals`):
SqliteStore keeps them on disk next to its database, PostgresStore in the database, so a press
on the button works on any replica.

Quota reservations: `reserve` books images before the backend is called and `settle` turns the
delivered ones into usage and refunds the rest. A reservation that is never settled (the process
died mid-request) stops counting after `RESERVATION_TTL` (one hour), so a crash cannot block a
user for the rest of the day. Only chats with a negative id (Telegram groups, supergroups and
channels) are counted against the chat limit; pass ``chat_id=None`` or the private chat's id
otherwise.

Money (issue #13): pictures beyond the free allowance can be paid from bought credits
(``reserve(..., credits=True)``; a reservation's ``paid`` part is spent only for delivered
pictures, the free part first); the bot-wide daily budget is held by `reserve_budget` (the
request's worst-case cost, checked against what is spent and held today in the same transaction)
and settled with the actual cost by `settle_cost`, which also stores every request's cost for
`spend`; `add_payment` credits a Stars payment once per ``telegram_payment_charge_id``.

Jobs (issue #10): every admitted request is a `JobRecord` before the images service is called,
and its quota reservation belongs to it: `create_job` stores it (state "queued") with the
reservation and budget hold already booked, `transition_job` moves it between the unfinished
states (queued, running, delivering), and `finish_job` ends it (delivered, failed or cancelled)
and settles its reservation in the same transaction, so a finished job never holds quota and a
reservation is settled exactly once. `unfinished_jobs` lists what a restart must resume, in the
order the jobs were created. `note_update` remembers webhook update ids so that an update Telegram
sends twice is handled once; `prune_jobs` forgets finished jobs and update ids.

Exception family::

    StoreError                      the database cannot be opened, read or written
    bot.quota.QuotaExceeded         raised by `reserve` when a daily limit would be exceeded
      bot.quota.CreditsNeeded       ... and the user's credits do not cover the rest
    bot.pricing.BudgetExhausted     raised by `reserve_budget` when the day's budget is used up
    PaymentError                    a refund is refused (`reason`: unknown, refunded, spent)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Protocol

from bot import pricing

Clock = Callable[[], datetime]

RESERVATION_TTL = timedelta(hours=1)
RESULTS_PER_USER = 50
SETTING_SCOPES = ("user", "chat")
UNFINISHED_STATES = ("queued", "running", "delivering")
FINISHED_STATES = ("delivered", "failed", "cancelled")
JOB_STATES = UNFINISHED_STATES + FINISHED_STATES
# A job with what it booked, in the one shape both stores read back (see their `_job`).
JOB_SELECT = (
    "SELECT jobs.id, jobs.owner, jobs.user_id, jobs.chat_id, jobs.chat_type, jobs.thread_id,"
    " jobs.message_id, jobs.lang, jobs.request, jobs.state, jobs.created_at, jobs.updated_at,"
    " r.id, r.user_id, r.chat_id, r.n, r.day, r.paid, b.id, b.day, b.amount"
    " FROM jobs LEFT JOIN reservations r ON r.id = jobs.reservation_id"
    " LEFT JOIN budget_holds b ON b.id = jobs.budget_hold_id"
)


# The columns both implementations read back into `ResultRecord` and `Payment`, in order.
RESULT_SELECT = (
    "SELECT id, user_id, chat_id, prompt, options, model, file_ids, created_at FROM results"
)
PAYMENT_SELECT = "SELECT charge_id, user_id, pictures, stars, created_at, refunded_at FROM payments"


def is_group(chat_id: int | None) -> bool:
    """Return whether a chat id names a group (negative): only those have a chat limit."""
    return chat_id is not None and chat_id < 0


def check_scope(scope: str) -> None:
    """Refuse a settings scope other than "user" and "chat"."""
    if scope not in SETTING_SCOPES:
        raise ValueError(f"scope must be one of {SETTING_SCOPES}, not {scope!r}")


class StoreError(Exception):
    """The database cannot be opened, read or written; the message says what to do."""


class PaymentError(Exception):
    """A refund is refused: `reason` is "unknown", "refunded" or "spent" (credits used)."""

    def __init__(self, reason: str, *, charge_id: str) -> None:
        super().__init__(f"payment {charge_id!r} cannot be refunded: {reason}")
        self.reason = reason
        self.charge_id = charge_id


@dataclass(frozen=True)
class Reservation:
    """Images booked against today's quota, to be settled once the request is over."""

    id: int
    user_id: int
    chat_id: int | None
    n: int
    day: date
    paid: int = 0  # how many of the n are paid from the user's credits


@dataclass(frozen=True)
class BudgetHold:
    """A request's worst-case cost held against today's budget until it is settled."""

    id: int
    day: date
    amount: pricing.Nanos


@dataclass(frozen=True)
class Payment:
    """One Telegram Stars payment and the credits (pictures) it bought."""

    charge_id: str
    user_id: int
    pictures: int
    stars: int
    created_at: datetime
    refunded: bool


@dataclass(frozen=True)
class SpendTotals:
    """Costs of one period: the total, by model and the users who cost most."""

    cost: pricing.Nanos
    images: int
    by_model: list[tuple[str, pricing.Nanos, int]]
    top_users: list[tuple[int, pricing.Nanos]]


@dataclass(frozen=True)
class Spend:
    """What the pictures cost today (UTC), in the last 7 days (today included) and all time."""

    day: date
    today: SpendTotals
    week: SpendTotals
    all_time: SpendTotals
    budget_held: pricing.Nanos  # worst cases of requests in flight


@dataclass(frozen=True)
class Usage:
    """A user's quota today; `used_today` includes images reserved by requests in flight."""

    used_today: int
    limit: int
    remaining: int | None
    resets_at: datetime
    total_all_time: int


@dataclass(frozen=True)
class Stats:
    """Request and image totals for today (UTC) and all time, for admins."""

    day: date
    images_today: int
    requests_today: int
    failures_today: dict[str, int]
    images_all_time: int
    requests_all_time: int
    failures_all_time: dict[str, int]
    top_users_today: list[tuple[int, int]]
    top_users_all_time: list[tuple[int, int]]
    distinct_users: int


@dataclass(frozen=True)
class ResultRecord:
    """One generated result kept for buttons and /history."""

    id: str
    user_id: int
    chat_id: int | None
    prompt: str
    options: str
    model: str
    file_ids: tuple[str, ...]
    created_at: datetime


class KeptOriginals(Protocol):
    """The lossless original bytes of recent results; failures are logged, never raised."""

    async def save(self, result_id: str, files: Sequence[tuple[str, bytes | Path]]) -> None:
        """Keep `(filename, bytes)` pairs for a result (a `Path` is a spooled file to take)."""
        ...

    async def load(self, result_id: str) -> list[tuple[str, bytes]]:
        """Return the kept `(filename, bytes)` pairs of a result (empty when gone)."""
        ...


@dataclass(frozen=True)
class JobRecord:
    """One admitted request as stored: who asked where, what for, what it holds, how far it got.

    `request` is the validated request as JSON (`bot.jobs.model` writes and reads it; the store
    keeps it as it is). `reservation` and `budget` are what the job booked (None when the store no
    longer has them); `thread_id` is the forum topic to answer in, None outside topics. `owner`
    names the bot instance that admitted it (one per `DATA_DIR`), which resumes it.
    """

    id: int
    owner: str
    user_id: int
    chat_id: int
    chat_type: str
    thread_id: int | None
    message_id: int
    lang: str
    request: str
    reservation: Reservation | None
    budget: BudgetHold | None
    state: str
    created_at: datetime
    updated_at: datetime


class Store(Protocol):
    """The persistent state the bot needs; every method is safe to await from the event loop."""

    @property
    def originals(self) -> KeptOriginals: ...

    async def close(self) -> None: ...

    async def ping(self) -> None:
        """Answer a trivial query, or raise StoreError (the health check)."""
        ...

    async def reserve(
        self,
        *,
        user_id: int,
        chat_id: int | None,
        n: int,
        user_limit: int,
        chat_limit: int,
        exempt: bool,
        credits: bool = False,
    ) -> Reservation: ...

    async def settle(self, reservation: Reservation, *, delivered: int) -> None: ...

    async def usage(self, *, user_id: int, user_limit: int) -> Usage: ...

    async def record_request(
        self,
        *,
        user_id: int,
        chat_id: int | None,
        images_requested: int,
        images_delivered: int,
        outcome: str,
    ) -> None: ...

    async def stats(self, *, top: int = 5) -> Stats: ...

    async def reserve_budget(
        self, *, amount: pricing.Nanos, budget: pricing.Nanos
    ) -> BudgetHold: ...

    async def settle_cost(
        self,
        hold: BudgetHold | None,
        *,
        user_id: int,
        model: str,
        images: int,
        cost: pricing.Nanos,
    ) -> pricing.Nanos: ...

    async def credits(self, *, user_id: int) -> int: ...

    async def add_payment(
        self, *, charge_id: str, user_id: int, pictures: int, stars: int, payload: str
    ) -> bool: ...

    async def refund_payment(self, *, charge_id: str) -> Payment: ...

    async def undo_refund(self, *, charge_id: str) -> None: ...

    async def spend(self, *, top: int = 5) -> Spend: ...

    async def get_settings(self, *, scope: str, scope_id: int) -> dict[str, str]: ...

    async def set_setting(
        self, *, scope: str, scope_id: int, key: str, value: str | None
    ) -> None: ...

    async def save_result(
        self,
        *,
        user_id: int,
        chat_id: int | None,
        prompt: str,
        options: str,
        model: str,
        file_ids: list[str] | None = None,
    ) -> str: ...

    async def set_result_files(self, *, result_id: str, file_ids: list[str]) -> None: ...

    async def get_result(self, *, result_id: str) -> ResultRecord | None: ...

    async def history(
        self, *, user_id: int, limit: int = 10, chat_id: int | None = None
    ) -> list[ResultRecord]: ...

    async def should_alert(self, *, kind: str, every: timedelta) -> bool: ...

    # --- jobs (see the module docstring) ------------------------------------------------------

    async def create_job(
        self,
        *,
        owner: str,
        user_id: int,
        chat_id: int,
        chat_type: str,
        thread_id: int | None,
        message_id: int,
        lang: str,
        request: str,
        reservation: Reservation | None,
        budget: BudgetHold | None,
    ) -> JobRecord:
        """Store a new job in state "queued", created now, holding `reservation` and `budget`.

        Ids grow: a later job has a larger id, and `unfinished_jobs` lists them in id order.
        """
        ...

    async def transition_job(self, job_id: int, *, to: str, from_states: tuple[str, ...]) -> bool:
        """Move an unfinished job to the unfinished state `to` if it is in one of `from_states`.

        Compare-and-set in one transaction; stamps `updated_at`. Returns whether the job moved
        (False when it is unknown, finished, or in another state). Raises ValueError when `to` is
        not one of `UNFINISHED_STATES`.
        """
        ...

    async def finish_job(self, job_id: int, *, state: str, delivered: int) -> bool:
        """End an unfinished job in `state` (one of `FINISHED_STATES`) and settle its quota.

        In the same transaction, the job's reservation (if any) is settled like `settle` with
        `delivered` pictures (clamped to 0..n): delivered ones counted, the rest refunded.
        Returns True for the call that finished the job; False (changing nothing) when it was
        already finished or is unknown, so a job is settled exactly once. Its budget hold is
        released separately, by `settle_cost` with what the call cost.
        """
        ...

    async def unfinished_jobs(self, *, owner: str) -> list[JobRecord]:
        """Return `owner`'s jobs in state queued, running or delivering, oldest (smallest id)
        first (other instances' jobs are theirs to resume)."""
        ...

    async def get_job(self, job_id: int) -> JobRecord | None:
        """Return one job in any state, or None when it is unknown (or pruned)."""
        ...

    async def note_update(self, update_id: int) -> bool:
        """Remember a Telegram update id; return False when it was already noted (a repeat)."""
        ...

    async def prune_jobs(self, *, before: datetime) -> int:
        """Forget finished jobs last changed before `before`, and update ids noted before it.

        Unfinished jobs are never pruned. Returns how many jobs were removed.
        """
        ...
