"""Several `python -m bot` replicas on one PostgreSQL database (issue #12): one polls and another
takes over within seconds when it is killed; in webhook mode a round-robin balancer spreads the
updates over all of them; every command gets exactly one answer either way."""

from __future__ import annotations

import time
from pathlib import Path

import psycopg

from bot.app import derived_webhook_secret
from tests.conftest import API_KEY, TOKEN, USER, base_env
from tests.emulators.balancer import Balancer
from tests.emulators.openai_images import OpenAIEmulator
from tests.emulators.telegram_api import CONFLICT_OTHER_POLL, TelegramEmulator
from tests.pg import PASSWORD, PostgresServer
from tests.replicas import Replicas
from tests.test_subprocess import _wait_text_reply

BURST = 60  # pictures asked at once, in the webhook test
LEASE = 4.0  # JOB_LEASE_SECONDS of the kill -9 test
TAKE_OVER = 15.0  # seconds: the lock is free at once, a standby asks every 2 s (margin: CI)


def _photos(tg: TelegramEmulator, chat: int, message_id: int) -> list[object]:
    return [
        sent
        for sent in tg.sent_messages(chat)
        if sent.kind == "photo"
        and (sent.get("reply_to_message") or {}).get("message_id") == message_id
    ]


def _wait_photos(tg: TelegramEmulator, asked: list[tuple[int, int]], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while missing := [(chat, mid) for chat, mid in asked if not _photos(tg, chat, mid)]:
        if time.monotonic() > deadline:
            raise AssertionError(f"no picture for {missing}")
        time.sleep(0.05)


def _exactly_one_each(tg: TelegramEmulator, asked: list[tuple[int, int]]) -> None:
    time.sleep(1.0)  # anything sent twice would be there by now
    counts = {(chat, mid): len(_photos(tg, chat, mid)) for chat, mid in asked}
    assert set(counts.values()) == {1}, counts


def _wait_answers(
    tg: TelegramEmulator, chat: int, message_ids: list[int], timeout: float = 30.0
) -> dict[int, list[str]]:
    """Wait until each message has an answer; return the kinds of each one's answers, a moment
    later (a second answer to any would be there by then). Status messages are left out."""

    def answers() -> dict[int, list[str]]:
        found: dict[int, list[str]] = {mid: [] for mid in message_ids}
        for sent in tg.sent_messages(chat):
            mid = (sent.get("reply_to_message") or {}).get("message_id")
            if mid in found and not sent.deleted and sent.kind in ("photo", "text"):
                found[mid].append(sent.kind)
        return found

    deadline = time.monotonic() + timeout
    while not all(answers().values()):
        if time.monotonic() > deadline:
            raise AssertionError(f"unanswered: {answers()}")
        time.sleep(0.05)
    time.sleep(1.0)
    return answers()


def _conflicts(tg: TelegramEmulator) -> list[object]:
    return [
        call
        for call in tg.calls_of("getUpdates")
        if call.status == 409 and CONFLICT_OTHER_POLL in str(call.response)
    ]


def test_one_replica_polls_and_another_takes_over_after_kill_9(
    tmp_path: Path, pg_server: PostgresServer
) -> None:
    with TelegramEmulator(TOKEN) as tg, OpenAIEmulator(api_key=API_KEY) as oai:
        env = base_env(tg, oai, tmp_path / "unused")
        env["STORE_URL"] = pg_server.create_database()
        with Replicas(env, tmp_path, count=3, webhook=False) as replicas:
            replicas.wait_healthy()  # standbys are healthy: they do their part
            leader = replicas.wait_one_leader()
            first = tg.send_message(chat_id=USER, user_id=USER, text="/image before the crash")
            asked = [(USER, first["message"]["message_id"])]
            _wait_photos(tg, asked)

            leader.kill()
            started = time.monotonic()
            successor = replicas.wait_one_leader(timeout=TAKE_OVER)
            assert successor is not leader
            second = tg.send_message(chat_id=USER, user_id=USER, text="/image after the crash")
            asked.append((USER, second["message"]["message_id"]))
            _wait_photos(tg, asked, timeout=TAKE_OVER + 20)
            assert time.monotonic() - started < TAKE_OVER + 20
            _exactly_one_each(tg, asked)
            replicas.wait_healthy(timeout=10)
            logs = replicas.stop()
    for index, (code, log) in logs.items():
        if index != leader.index:
            assert code == 0, log[-3000:]
        assert "Traceback" not in log, log[-3000:]
        assert PASSWORD not in log and TOKEN not in log
    assert "another replica polls for updates: this one stands by" in logs[successor.index][1]
    assert _conflicts(tg) == [], "two replicas polled at once"
    assert len(oai.api_requests) == 2


def test_three_webhook_replicas_behind_a_balancer_answer_each_command_once(
    tmp_path: Path, pg_server: PostgresServer
) -> None:
    with TelegramEmulator(TOKEN) as tg, OpenAIEmulator(api_key=API_KEY) as oai:
        env = base_env(tg, oai, tmp_path / "unused")
        env.update(
            STORE_URL=pg_server.create_database(),
            DAILY_IMAGE_LIMIT="5",
            MAX_INFLIGHT_PER_USER="20",
        )
        with Replicas(env, tmp_path, count=3, webhook=True) as replicas:
            replicas.wait_healthy()
            # No WEBHOOK_SECRET_TOKEN: each replica derives the same secret from the token.
            secret = derived_webhook_secret(TOKEN)
            assert tg.webhook.get("secret_token") == secret
            assert len(replicas.leaders()) == 3, "in webhook mode every replica takes updates"
            with Balancer([replica.webhook for replica in replicas]) as balancer:
                tg.webhook_target = f"{balancer.url}/hook"
                asked = []
                for user in range(USER, USER + 9):
                    update = tg.send_message(chat_id=user, user_id=user, text=f"/image cat {user}")
                    asked.append((user, update["message"]["message_id"]))
                _wait_photos(tg, asked)
                _exactly_one_each(tg, asked)
                # A burst over Telegram's ~30 a second for the bot: the replicas share one
                # budget (25 a second) in the database, so Telegram refuses none of it.
                burst = []
                for user in range(USER + 100, USER + 100 + BURST):
                    update = tg.send_message(chat_id=user, user_id=user, text=f"/image dog {user}")
                    burst.append((user, update["message"]["message_id"]))
                _wait_photos(tg, burst)
                _exactly_one_each(tg, burst)
                # 20 requests of one user at once, spread over the three: the daily limit of 5
                # holds across them (the quota is booked in the database), and every request
                # gets exactly one answer, a picture or the refusal.
                quota_user = USER + 500
                own = [
                    tg.send_message(chat_id=quota_user, user_id=quota_user, text=f"/image {i}")
                    for i in range(20)
                ]
                answers = _wait_answers(tg, quota_user, [u["message"]["message_id"] for u in own])
                kinds = sorted(kinds for kinds in answers.values())
                assert kinds == [["photo"]] * 5 + [["text"]] * 15, answers
                refusals = [m.text or "" for m in tg.sent_messages(quota_user) if m.kind == "text"]
                assert all("The limit resets" in text for text in refusals), refusals
                # The quota is the database's: whichever replica answers knows the booking.
                usage = tg.send_message(chat_id=USER, user_id=USER, text="/usage")
                text = _wait_text_reply(tg, usage["message"]["message_id"])
                assert "1" in text and "5" in text, text
                served = balancer.served
            logs = replicas.stop()
    assert sorted(served) == sorted(replica.webhook for replica in replicas.replicas)
    assert all(count >= 2 for count in served.values()), served
    assert not tg.calls_of("getUpdates")
    assert len(oai.api_requests) == 9 + BURST + 5
    assert [call.method for call in tg.calls if call.status == 429] == []
    for code, log in logs.values():
        assert code == 0, log[-3000:]
        assert "Traceback" not in log, log[-3000:]
        assert PASSWORD not in log and secret not in log


def test_a_job_of_a_replica_killed_mid_generation_is_finished_by_another_once(
    tmp_path: Path, pg_server: PostgresServer
) -> None:
    url = pg_server.create_database()
    with TelegramEmulator(TOKEN) as tg, OpenAIEmulator(api_key=API_KEY, delay=3.0) as oai:
        env = base_env(tg, oai, tmp_path / "unused")
        env.update(STORE_URL=url, DAILY_IMAGE_LIMIT="5", JOB_LEASE_SECONDS=str(LEASE))
        with Replicas(env, tmp_path, count=3, webhook=True) as replicas:
            replicas.wait_healthy()
            with Balancer([replica.webhook for replica in replicas]) as balancer:
                tg.webhook_target = f"{balancer.url}/hook"
                update = tg.send_message(chat_id=USER, user_id=USER, text="/image phoenix")
                asked = [(USER, update["message"]["message_id"])]
                oai.wait_for_requests(1, timeout=20)  # drawing, in one of the three
                with psycopg.connect(url) as conn:
                    (owner,) = conn.execute("SELECT owner FROM jobs").fetchone() or ("",)
                holder = next(r for r in replicas if r.instance_id() == owner)
                holder.kill()
                killed = time.monotonic()
                _wait_photos(tg, asked, timeout=LEASE + 30)
                # Taken over within the lease (plus the second drawing and the upload).
                assert time.monotonic() - killed < LEASE + 3.0 + 10
                _exactly_one_each(tg, asked)
                usage = tg.send_message(chat_id=USER, user_id=USER, text="/usage")
                text = _wait_text_reply(tg, usage["message"]["message_id"])
            logs = replicas.stop()
    assert "4" in text, text  # one picture counted: 4 of 5 left
    assert len(oai.api_requests) == 2  # the killed replica's call, and the one that delivered
    took_over = [log for index, (_, log) in logs.items() if "took over 1 job(s)" in log]
    assert len(took_over) == 1, "exactly one replica takes the job over"
    for index, (code, log) in logs.items():
        if index != holder.index:
            assert code == 0, log[-3000:]
        assert "Traceback" not in log, log[-3000:]
