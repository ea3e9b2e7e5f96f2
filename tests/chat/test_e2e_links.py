"""End to end, links the model can see: media a link unfurls into (an image, a Tenor gifv, a
video) reach the model like attachments, fetched only through Discord's media proxy; linked
web pages are read (public addresses only, redirects checked hop by hop) and their text
given to the model, the reply naming what was read and what not."""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator
from typing import Any

import av
import pytest

from tests.chat.conftest import Harness, HarnessFactory
from tests.fakes.discord.events import CdnFetched
from tests.fakes.discord.models import FakeChannel, FakeMessage, UserFile
from tests.fakes.discord.standard import StandardWorld
from tests.fakes.discord.unfurl import gifv_embed, image_embed, link_embed, video_embed
from tests.fakes.pages import PRIVATE, PUBLIC, FakeWeb, Reply, fake_network

PNG = (
    b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x02\x00\x00\x00"
    b"\x90wS\xde\x00\x00\x00\x0cIDATx\x9cc\xf8\xff\xff?\x00\x05\xfe\x02\xfe\xa7\x35\x81\x84"
    b"\x00\x00\x00\x00IEND\xaeB`\x82"
)
MP4 = b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom" + b"\x00" * 64
ARTICLE = """<html><head><title>Tide tables</title><script>var secret = 1;</script></head>
<body><nav>Home | About</nav><main><h1>High tide</h1><p>High tide at <b>Brest</b> is at
06:12 today.</p><p>Low tide follows six hours later.</p></main><footer>cookies</footer>
</body></html>"""
# Unfurls are waited for this long at most: long enough for a busy machine, and a test
# that unfurls sends its update as soon as the bot is at work (the thread is open).
WAIT = {"SEED_BOT_LINKS__EMBED_WAIT_SECONDS": "10"}


@pytest.fixture
async def web() -> AsyncIterator[FakeWeb]:
    fake = FakeWeb()
    await fake.start()
    try:
        yield fake
    finally:
        await fake.close()


async def linked(
    h: Harness, text: str, embeds: list[dict[str, Any]] | None = None
) -> tuple[FakeMessage, FakeChannel]:
    """Alice mentions the bot with ``text``; once the bot opened the thread, Discord unfurls
    the links into ``embeds`` (None: it unfurls nothing)."""
    message, thread = await h.start_thread(h.world.alice, text)
    if embeds is not None:
        await h.fake.unfurl(message, embeds)
    return message, thread


async def sent(h: Harness, thread: FakeChannel, since: int) -> dict[str, Any]:
    await h.answer_in(thread, since=since, contains="echo:")
    [request] = h.fal.requests.values()
    return dict(request.input)


async def warning(h: Harness, thread: FakeChannel) -> str:
    await h.app.bot.idle()
    [line] = [
        line
        for m in h.fake.bot_messages(thread)
        for line in m.content.splitlines()
        if line.startswith("⚠️")
    ]
    return line


def proxied(h: Harness, since: int) -> list[str]:
    return [e.path for e in h.fake.events_of(CdnFetched, since=since)]


# -- media a link unfurls into ---------------------------------------------------------------


async def test_a_linked_image_reaches_the_model_through_discords_media_proxy(
    make_harness: HarnessFactory, web: FakeWeb
) -> None:
    h = await make_harness(network=fake_network(), **WAIT)
    url = "https://pics.test/cat.png"
    since = h.fake.mark()
    _, thread = await linked(h, f"what is this? {url}", [image_embed(h.fake, url, PNG)])
    request = await sent(h, thread, since)
    [image] = request["image_urls"]
    assert image.startswith(h.fal.base_url)  # copied durably, as an attachment is
    assert [f.data for f in h.fal.files.values()] == [PNG]
    assert [p.split("/")[1] for p in proxied(h, since)] == ["external"]
    assert web.requests == []  # the linked site itself is never asked
    assert "Text of the linked page" not in request["prompt"]


async def test_a_tenor_gif_reaches_the_model_as_its_mp4(
    make_harness: HarnessFactory, web: FakeWeb
) -> None:
    h = await make_harness(network=fake_network(), **WAIT)
    url = "https://tenor.test/view/dancing-cat-123"
    since = h.fake.mark()
    _, thread = await linked(h, f"describe {url}", [gifv_embed(h.fake, url, MP4, PNG)])
    request = await sent(h, thread, since)
    assert request.get("image_urls", []) == [] and len(request["video_urls"]) == 1
    [stored] = h.fal.files.values()
    assert (stored.data, stored.content_type) == (MP4, "video/mp4")
    assert web.requests == []


async def test_a_linked_video_reaches_the_model(make_harness: HarnessFactory, web: FakeWeb) -> None:
    h = await make_harness(network=fake_network(), **WAIT)
    url = "https://clips.test/wave.mp4"
    since = h.fake.mark()
    _, thread = await linked(h, f"what happens? {url}", [video_embed(h.fake, url, MP4)])
    request = await sent(h, thread, since)
    assert len(request["video_urls"]) == 1
    assert [f.data for f in h.fal.files.values()] == [MP4]


async def test_linked_media_count_against_the_image_limit(
    make_harness: HarnessFactory, web: FakeWeb
) -> None:
    h = await make_harness(network=fake_network(), **WAIT)
    urls = [f"https://pics.test/{n}.png" for n in range(8)]
    since = h.fake.mark()
    _, thread = await linked(
        h, "compare " + " ".join(urls), [image_embed(h.fake, u, PNG) for u in urls]
    )
    request = await sent(h, thread, since)
    assert len(request["image_urls"]) == 6
    assert "only 6 images per message are sent" in await warning(h, thread)
    assert web.requests == []  # images, not pages: nothing fetched from the sites


async def test_linked_media_over_the_size_cap_are_named_and_left_out(
    make_harness: HarnessFactory,
) -> None:
    h = await make_harness(SEED_BOT_ATTACHMENTS__MAX_IMAGE_BYTES=str(len(PNG) - 1), **WAIT)
    url = "https://pics.test/big.png"
    since = h.fake.mark()
    _, thread = await linked(h, f"see {url}", [image_embed(h.fake, url, PNG)])
    request = await sent(h, thread, since)
    assert not request.get("image_urls") and h.fal.files == {}
    line = await warning(h, thread)
    assert f"`big.png` could not be used: it is larger than {len(PNG) - 1} bytes" in line


async def test_linked_media_off_discords_hosts_are_not_fetched(
    make_harness: HarnessFactory, web: FakeWeb
) -> None:
    h = await make_harness(**WAIT)
    url = "https://pics.test/cat.png"
    web.pages["/cat.png"] = Reply(body=PNG, content_type="image/png")
    embed = image_embed(h.fake, url, PNG)
    embed["thumbnail"]["proxy_url"] = web.url("/cat.png", host=PUBLIC)  # not Discord's
    since = h.fake.mark()
    _, thread = await linked(h, f"see {url}", [embed])
    request = await sent(h, thread, since)
    assert not request.get("image_urls") and h.fal.files == {}
    assert "it is not hosted on Discord's CDN" in await warning(h, thread)
    assert web.requests == []


async def test_a_link_waiting_for_its_unfurl_holds_up_no_one_else(
    make_harness: HarnessFactory, web: FakeWeb
) -> None:
    h = await make_harness(network=fake_network(), **WAIT)
    url = "https://pics.test/late.png"
    since = h.fake.mark()
    message, thread = await linked(h, f"look {url}")  # no embed yet
    # Meanwhile Bob's question in another conversation is answered.
    bob_since = h.fake.mark()
    _, bob_thread = await h.start_thread(h.world.bob, "quick question")
    await h.answer_in(bob_thread, since=bob_since, contains="echo: quick question")
    assert not [m for m in h.fake.bot_messages(thread) if "echo:" in m.content]
    # Then Discord unfurls Alice's link: her answer sees the image.
    await h.fake.unfurl(message, [image_embed(h.fake, url, PNG)])
    await h.answer_in(thread, since=since, contains="echo: look")
    [alice] = [r for r in h.fal.requests.values() if "look" in r.input["prompt"]]
    assert len(alice.input["image_urls"]) == 1


def animated_gif(frames: int = 4, width: int = 33, height: int = 21) -> bytes:
    """A GIF of ``frames`` frames of changing colour, 100 ms each."""
    out = io.BytesIO()
    with av.open(out, "w", format="gif") as gif:
        stream = gif.add_stream("gif", rate=10)
        stream.width, stream.height, stream.pix_fmt = width, height, "rgb8"
        for n in range(frames):
            frame = av.VideoFrame(width, height, "rgb24")
            plane = frame.planes[0]
            plane.update(bytes([n * 60, 0, 255 - n * 60]) * (plane.buffer_size // 3))
            shown = frame.reformat(format="rgb8")
            shown.pts = n
            gif.mux(stream.encode(shown))
        gif.mux(stream.encode(None))
    return out.getvalue()


def video_frames(data: bytes) -> tuple[str, int]:
    with av.open(io.BytesIO(data), "r") as video:
        stream = video.streams.video[0]
        return stream.codec_context.name, sum(1 for _ in video.decode(stream))


async def test_an_attached_gif_reaches_the_model_as_an_mp4_with_its_frames(
    make_harness: HarnessFactory,
) -> None:
    h = await make_harness()
    since = h.fake.mark()
    _, thread = await h.start_thread(
        h.world.alice, "what happens here?", files=[UserFile("dance.gif", animated_gif())]
    )
    request = await sent(h, thread, since)
    assert not request.get("image_urls") and len(request["video_urls"]) == 1
    [stored] = h.fal.files.values()
    assert (stored.file_name, stored.content_type) == ("dance.mp4", "video/mp4")
    assert video_frames(stored.data) == ("h264", 4)


async def test_a_linked_gif_reaches_the_model_as_an_mp4(
    make_harness: HarnessFactory, web: FakeWeb
) -> None:
    h = await make_harness(**WAIT)
    url = "https://pics.test/wave.gif"
    embed = image_embed(h.fake, url, animated_gif(frames=3), content_type="image/gif")
    since = h.fake.mark()
    _, thread = await linked(h, f"and this? {url}", [embed])
    request = await sent(h, thread, since)
    assert len(request["video_urls"]) == 1
    [stored] = h.fal.files.values()
    assert video_frames(stored.data) == ("h264", 3)
    assert web.requests == []


async def test_a_broken_gif_is_named_and_left_out(make_harness: HarnessFactory) -> None:
    h = await make_harness()
    since = h.fake.mark()
    _, thread = await h.start_thread(
        h.world.alice, "look", files=[UserFile("broken.gif", b"GIF89a not really")]
    )
    request = await sent(h, thread, since)
    assert not request.get("video_urls")
    assert "`broken.gif` could not be used: it is not a GIF that could be read" in (
        await warning(h, thread)
    )


async def test_a_late_unfurl_is_not_taken_for_an_edit(make_harness: HarnessFactory) -> None:
    # Not waited for (0 s): answered without the image; the unfurl arriving after the
    # answer, for a message discord.py no longer caches, must not answer it again.
    h = await make_harness(SEED_BOT_LINKS__EMBED_WAIT_SECONDS="0")
    url = "https://pics.test/late.png"
    since = h.fake.mark()
    _, thread = await h.start_thread(h.world.alice, "hello")
    await h.answer_in(thread, since=since, contains="echo: hello")
    since = h.fake.mark()
    message = await h.fake.send_message(h.world.alice, thread, f"look {url}")
    answer = await h.answer_in(thread, since=since, contains="echo: look")
    messages = h.app.bot._connection._messages
    assert messages is not None
    messages.clear()  # as if it had left the cache
    await h.fake.unfurl(message, [image_embed(h.fake, url, PNG)])
    unfurls = h.app.bot.inbound.unfurls
    async with asyncio.timeout(10):
        while not unfurls.unfurled(message.id):
            unfurls.arrived.clear()
            await unfurls.arrived.wait()
    await h.app.bot.idle()  # what the update started, if anything, is done
    assert len(h.fal.requests) == 2
    assert [m for m in h.fake.bot_messages(thread) if "echo: look" in m.content] == [answer]


# -- web pages ---------------------------------------------------------------------------------


async def test_a_linked_page_is_read_and_named_in_the_reply(
    make_harness: HarnessFactory, web: FakeWeb
) -> None:
    h = await make_harness(network=fake_network(), **WAIT)
    web.page("/tides", ARTICLE)
    url = web.url("/tides")
    since = h.fake.mark()
    _, thread = await linked(h, f"when is high tide? {url}", [link_embed(url, "Tide tables")])
    prompt = (await sent(h, thread, since))["prompt"]
    assert "High tide at Brest is at 06:12 today." in prompt
    assert "Tide tables" in prompt
    assert "var secret" not in prompt and "Home | About" not in prompt
    assert "read `public.test/tides`" in await warning(h, thread)
    [request] = web.requests
    assert request.headers["User-Agent"].startswith("seed-bot")
    assert "Cookie" not in request.headers and "Authorization" not in request.headers


@pytest.mark.parametrize(
    "target",
    [
        "http://127.0.0.1:{port}/secret",
        "http://localhost:{port}/secret",
        "http://wiki.internal:{port}/secret",
        "http://[::1]:{port}/secret",
        "http://10.0.0.1/secret",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::ffff:127.0.0.1]:{port}/secret",
    ],
)
async def test_a_link_to_a_private_address_is_not_fetched(
    make_harness: HarnessFactory, web: FakeWeb, target: str
) -> None:
    h = await make_harness(network=fake_network(), **WAIT)
    web.page("/secret", "<p>the intranet's secret</p>")
    url = target.format(port=web.port)
    since = h.fake.mark()
    _, thread = await linked(h, f"what does {url} say?", [link_embed(url, "secret")])
    prompt = (await sent(h, thread, since))["prompt"]
    assert "secret</p>" not in prompt and "intranet's secret" not in prompt
    assert "could not be read: it points to a private address" in await warning(h, thread)
    assert web.requests == []


async def test_a_redirect_from_a_public_page_to_a_private_one_is_not_followed(
    make_harness: HarnessFactory, web: FakeWeb
) -> None:
    h = await make_harness(network=fake_network(), **WAIT)
    web.page("/secret", "<p>the intranet's secret</p>")
    web.redirect("/go", f"http://{PRIVATE}:{web.port}/secret")
    url = web.url("/go")
    since = h.fake.mark()
    _, thread = await linked(h, f"read {url}", [link_embed(url, "go")])
    prompt = (await sent(h, thread, since))["prompt"]
    assert "intranet's secret" not in prompt
    assert "could not be read: it points to a private address" in await warning(h, thread)
    assert [r.path for r in web.requests] == ["/go"]


async def test_a_redirect_between_public_pages_is_followed(
    make_harness: HarnessFactory, web: FakeWeb
) -> None:
    h = await make_harness(network=fake_network(), **WAIT)
    web.page("/tides", ARTICLE)
    web.redirect("/old", "/tides", status=301)
    since = h.fake.mark()
    url = web.url("/old")
    _, thread = await linked(h, f"read {url}", [link_embed(url, "Tide tables")])
    prompt = (await sent(h, thread, since))["prompt"]
    assert "High tide at Brest" in prompt
    assert [r.path for r in web.requests] == ["/old", "/tides"]


async def test_an_operator_may_allow_a_named_private_host(
    make_harness: HarnessFactory, web: FakeWeb
) -> None:
    h = await make_harness(
        network=fake_network(), SEED_BOT_LINKS__ALLOW_PRIVATE_HOSTS="wiki.internal", **WAIT
    )
    web.page("/handbook", "<main><p>Deploys happen on Tuesdays.</p></main>")
    url = f"http://wiki.internal:{web.port}/handbook"
    since = h.fake.mark()
    _, thread = await linked(h, f"when? {url}", [link_embed(url, "Handbook")])
    prompt = (await sent(h, thread, since))["prompt"]
    assert "Deploys happen on Tuesdays." in prompt
    # The name is allowed, not the address: the same server by its address stays refused.
    assert [(r.address, r.path) for r in web.requests] == [(PRIVATE, "/handbook")]


async def test_pages_are_not_read_when_turned_off(
    make_harness: HarnessFactory, web: FakeWeb
) -> None:
    h = await make_harness(network=fake_network(), SEED_BOT_LINKS__READ_PAGES="false", **WAIT)
    web.page("/tides", ARTICLE)
    url = web.url("/tides")
    since = h.fake.mark()
    _, thread = await linked(h, f"read {url}", [link_embed(url, "Tide tables")])
    prompt = (await sent(h, thread, since))["prompt"]
    assert "High tide at Brest" not in prompt
    assert web.requests == []


async def test_at_most_a_few_pages_are_read_and_each_is_capped(
    make_harness: HarnessFactory, web: FakeWeb
) -> None:
    h = await make_harness(
        network=fake_network(),
        SEED_BOT_LINKS__MAX_PAGES="2",
        SEED_BOT_LINKS__MAX_PAGE_BYTES="2048",
        **WAIT,
    )
    long_page = "<main>" + "".join(f"<p>line {n} of a long page</p>" for n in range(2000))
    for n in range(3):
        web.page(f"/p{n}", long_page + "</main>")
    urls = [web.url(f"/p{n}") for n in range(3)]
    since = h.fake.mark()
    _, thread = await linked(h, "summarise " + " ".join(urls), [link_embed(u, "p") for u in urls])
    prompt = (await sent(h, thread, since))["prompt"]
    assert prompt.count("Text of the linked page") == 2
    assert "line 1999 of a long page" not in prompt and "only the first 2 KB" in prompt
    assert len(prompt) < 2 * 2048 + 1000
    line = await warning(h, thread)
    assert "read `public.test/p0` (its first 2 KB), `public.test/p1` (its first 2 KB)" in line
    assert "1 links not read (at most 2 pages per message): `public.test/p2`" in line
    assert sorted(r.path for r in web.requests) == ["/p0", "/p1"]


async def test_a_page_that_is_not_html_is_not_read(
    make_harness: HarnessFactory, web: FakeWeb
) -> None:
    # Discord does not unfurl it: the bot, not waiting for unfurls, reads it at once.
    h = await make_harness(network=fake_network(), SEED_BOT_LINKS__EMBED_WAIT_SECONDS="0")
    web.page("/blob", "binary", content_type="application/octet-stream")
    since = h.fake.mark()
    _, thread = await linked(h, f"read {web.url('/blob')}")
    await sent(h, thread, since)
    assert "it is not a web page (application/octet-stream)" in await warning(h, thread)


async def test_a_plain_text_page_is_read_and_stored(
    make_harness: HarnessFactory, web: FakeWeb
) -> None:
    h = await make_harness(SEED_BOT_LINKS__EMBED_WAIT_SECONDS="0")
    # A NUL byte: PostgreSQL's text cannot hold one (the store replaces it).
    web.page("/notes.txt", "first note\x00\nsecond note", content_type="text/plain")
    since = h.fake.mark()
    _, thread = await linked(h, f"read {web.url('/notes.txt')}")
    prompt = (await sent(h, thread, since))["prompt"]
    assert "first note" in prompt and "second note" in prompt
    turn = await h.app.store.turns.latest_turn(str(thread.id))
    assert turn is not None and "second note" in turn.prompt


async def test_the_budget_sees_the_pages_text(make_harness: HarnessFactory, web: FakeWeb) -> None:
    # A short question fits the budget ($0.001 a unit, ~40 output units): with the page's
    # 8 KB of text (some 2000 input tokens) it does not, and the model is not called.
    h = await make_harness(
        SEED_BOT_COSTS__USD_PER_UNIT="0.001",
        SEED_BOT_MODEL__MAX_COMPLETION_TOKENS="10",
        SEED_BOT_BUDGETS__USER_DAILY_USD="0.5",
        SEED_BOT_LINKS__MAX_PAGE_BYTES="8192",
        **WAIT,
    )
    web.page("/long", "<main>" + "<p>many words on a long page</p>" * 400 + "</main>")
    since = h.fake.mark()
    _, thread = await h.start_thread(h.world.alice, "short question")
    await h.answer_in(thread, since=since, contains="echo: short question")
    url = web.url("/long")
    since = h.fake.mark()
    message = await h.fake.send_message(h.world.alice, thread, f"and this? {url}")
    await h.fake.unfurl(message, [link_embed(url, "long")])
    refusal = await h.fake.wait_for_message(thread, contains="budget", since=since, timeout=10)
    assert "You have used your $0.50 daily budget" in refusal.content
    assert len(h.fal.requests) == 1 and [r.path for r in web.requests] == ["/long"]


async def test_a_page_linked_in_an_ask_command_is_read(
    make_harness: HarnessFactory, web: FakeWeb
) -> None:
    h = await make_harness()
    web.page("/tides", ARTICLE)
    prompt = f"when is high tide? {web.url('/tides')}"
    await h.fake.invoke_command(h.world.alice, h.world.channel, "ask", {"prompt": prompt})
    [request_id] = await h.fal.wait_for_submissions(1, timeout=10)
    assert "High tide at Brest is at 06:12 today." in h.fal.requests[request_id].input["prompt"]
    assert [r.path for r in web.requests] == ["/tides"]


async def test_a_refused_persons_links_are_not_fetched(
    make_harness: HarnessFactory, web: FakeWeb, discord_world: StandardWorld
) -> None:
    # The gate comes first: for a person the access lists refuse, nothing is fetched.
    h = await make_harness(SEED_BOT_ACCESS__DENY_USERS=str(discord_world.alice.id), **WAIT)
    web.page("/tides", ARTICLE)
    pic = "https://pics.test/cat.png"
    since = h.fake.mark()
    message = await h.mention(h.world.alice, f"read {web.url('/tides')} and {pic}")
    await h.fake.unfurl(message, [image_embed(h.fake, pic, PNG)])
    await h.fake.wait_for_post(h.world.channel, since=since, timeout=10)  # the refusal
    await h.app.bot.idle()
    assert web.requests == [] and proxied(h, since) == [] and h.fal.requests == {}


async def test_a_page_linked_twice_is_read_once(make_harness: HarnessFactory, web: FakeWeb) -> None:
    # Bob's message links the page; Alice, replying to it, links it again.
    h = await make_harness(**WAIT)
    web.page("/tides", ARTICLE)
    url = web.url("/tides")
    bobs = await h.fake.send_message(h.world.bob, h.world.channel, f"look: {url}")
    await h.fake.unfurl(bobs, [link_embed(url, "Tide tables")])
    since = h.fake.mark()
    message = await h.mention(h.world.alice, f"is {url} right?", reply_to=bobs)
    thread = await h.fake.wait_for_thread(h.world.channel, from_message=message, since=since)
    await h.fake.unfurl(message, [link_embed(url, "Tide tables")])
    prompt = (await sent(h, thread, since))["prompt"]
    assert "look:" in prompt  # the quoted message is part of the turn
    assert prompt.count("Text of the linked page") == 1
    assert [r.path for r in web.requests] == ["/tides"]
