"""Groups end to end: addressed commands, commands for other bots, and the command menu."""

from __future__ import annotations

from tests.conftest import GROUP, OTHER_USER, USER


async def test_addressed_command_in_a_supergroup_replies_to_it(make_bot) -> None:
    async with make_bot() as bot:
        msg = bot.send("/image@ImageTestBot cat in a box", chat_id=GROUP, chat_type="supergroup")
        (photo,) = await bot.replies(msg, kinds=("photo",))
        assert photo.chat_id == GROUP
        assert photo["reply_to_message"]["message_id"] == msg["message_id"]
        assert photo.text == "cat in a box"
        (request,) = bot.oai.api_requests
        assert request.fields["prompt"] == "cat in a box"


async def test_plain_command_in_a_group_works(make_bot) -> None:
    async with make_bot() as bot:
        msg = bot.send("/image dog x2", chat_id=GROUP, user_id=OTHER_USER)
        photos = await bot.replies(msg, count=2, kinds=("photo",))
        assert {p.chat_id for p in photos} == {GROUP}
        (request,) = bot.oai.api_requests
        assert request.fields["n"] == 2


async def test_command_for_another_bot_is_ignored_and_costs_nothing(make_bot) -> None:
    async with make_bot() as bot:
        ignored = bot.send("/image@OtherBot cat", chat_id=GROUP)
        control = bot.send("/image@ImageTestBot control", chat_id=GROUP)
        await bot.replies(control, kinds=("photo",))  # processed after the ignored one
        await bot.settle(0.3)
        replying = [
            m
            for m in bot.tg.sent_messages(GROUP)
            if (m.get("reply_to_message") or {}).get("message_id") == ignored["message_id"]
        ]
        assert replying == []
        assert [r.fields["prompt"] for r in bot.oai.api_requests] == ["control"]
        actions = bot.tg.calls_of("sendChatAction")
        assert len(actions) <= 1  # only for the control request (if it took long enough)


async def test_command_for_another_bot_in_private_is_ignored(make_bot) -> None:
    async with make_bot() as bot:
        bot.send("/image@OtherBot cat")
        await bot.settle(0.5)
        assert bot.oai.api_requests == []
        assert [m.kind for m in bot.tg.sent_messages(USER) if m.kind != "text"] == []


async def test_group_errors_reply_to_the_command(make_bot) -> None:
    async with make_bot() as bot:
        msg = bot.send("/image@ImageTestBot cat x11", chat_id=GROUP)
        text = await bot.reply_text(msg)
        assert "x11" in text
        await bot.settle(0.2)
        assert bot.oai.api_requests == []


async def test_command_menu_is_registered_in_english_and_russian(make_bot) -> None:
    async with make_bot() as bot:
        commands = bot.tg.commands
        assert ("default", "") in commands
        assert ("default", "ru") in commands
        english = {c["command"]: c["description"] for c in commands[("default", "")]}
        russian = {c["command"]: c["description"] for c in commands[("default", "ru")]}
        assert "image" in english and "help" in english
        assert set(english) == set(russian)
        assert english["image"] != russian["image"]
        assert "/image" in english["image"]
