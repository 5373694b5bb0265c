"""Images in the TUI: the listing screen's preview (stepping, damaged or hostile bytes), the Sell
forms' image files (checked, uploaded, carried in the listing), and one listing whose picture
travels from a real seller node to the buyer's screen."""

from __future__ import annotations

import asyncio
import io
import struct
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest
from PIL import Image
from textual.pilot import Pilot
from textual.widgets import Input, Static
from textual_image.widget import HalfcellImage

from dht.testing import dht_network
from p2pmarket.client import Client
from tests.support.api import api_node, memory_hosts
from tests.support.tui import settle
from tui.app import MarketApp, make_app
from tui.screens.listing import ListingScreen
from tui.testing import FakeClient, image_ref, png
from tui.widgets.forms import FormScreen
from tui.widgets.images import MAX_PIXELS, ImagePreview, decode, fit, label


def app_over(client: FakeClient) -> MarketApp:
    return make_app(client, live=False)  # type: ignore[arg-type]


async def until(pilot: Pilot[Any], check: Callable[[], bool], timeout: float = 20) -> None:
    async with asyncio.timeout(timeout):
        while not check():  # noqa: ASYNC110 - the app updates from its own workers
            await pilot.pause(0.05)


async def open_listing(pilot: Pilot[Any], row: int = 0) -> ListingScreen:
    await pilot.press("enter")  # search everything
    await settle(pilot)
    for _ in range(row):
        await pilot.press("down")
    await pilot.press("enter")
    await settle(pilot)
    await settle(pilot)  # the preview's own worker
    assert isinstance(pilot.app.screen, ListingScreen)
    return pilot.app.screen


def preview_text(screen: ListingScreen) -> tuple[str, str]:
    """(the caption, the text in the picture's place or "" when a picture shows)."""
    preview = screen.query_one(ImagePreview)
    caption = str(preview.query_one("#image-caption", Static).render())
    texts = preview.query(".image-text")
    return caption, str(texts.first(Static).render()) if texts else ""


def pictures(screen: ListingScreen) -> int:
    return len(screen.query_one(ImagePreview).query(HalfcellImage))


# -- the listing screen's preview --------------------------------------------------------------


async def test_preview_shows_the_first_image_and_steps() -> None:
    client = FakeClient()
    first, second = image_ref(1), image_ref(2)
    async with app_over(client).run_test(size=(80, 24)) as pilot:
        screen = await open_listing(pilot)
        assert screen.query_one(ImagePreview).display
        assert preview_text(screen) == (f"[image 1/2: {first.sha256[:7]}, image/png]", "")
        assert pictures(screen) == 1
        assert ("get_image", (first.sha256, screen.listing.publisher)) in client.calls
        assert {"left_square_bracket", "right_square_bracket"} <= set(screen.active_bindings)

        await pilot.press("right_square_bracket")
        await settle(pilot)
        assert preview_text(screen) == (f"[image 2/2: {second.sha256[:7]}, image/png]", "")
        assert pictures(screen) == 1
        await pilot.press("right_square_bracket")  # wraps around, from the cache
        await settle(pilot)
        assert preview_text(screen)[0].startswith("[image 1/2:")
        await pilot.press("left_square_bracket")
        await settle(pilot)
        assert preview_text(screen)[0].startswith("[image 2/2:")
        assert [c for c in client.calls if c[0] == "get_image"] == [
            ("get_image", (first.sha256, screen.listing.publisher)),
            ("get_image", (second.sha256, screen.listing.publisher))]


async def test_listing_without_images_has_no_preview_and_no_keys() -> None:
    client = FakeClient()
    async with app_over(client).run_test(size=(80, 24)) as pilot:
        screen = await open_listing(pilot, row=1)
        assert not screen.listing.images
        assert not screen.query_one(ImagePreview).display
        assert not {"left_square_bracket", "right_square_bracket"} & set(screen.active_bindings)
        await pilot.press("right_square_bracket")  # nothing happens, nothing breaks
        await settle(pilot)
        assert not [c for c in client.calls if c[0] == "get_image"]


def cut(kind: str) -> bytes:
    """The first half of a noisy picture saved as `kind`."""
    out = io.BytesIO()
    Image.effect_noise((64, 64), 80).convert("RGB").save(out, kind)
    return out.getvalue()[:len(out.getvalue()) // 2]


@pytest.mark.parametrize(("blob", "reason"), [
    (b"hello, not a picture", "not a PNG, JPEG, WebP or GIF image"),
    (b"GIF89a" + b"\xff" * 40, "not a PNG, JPEG, WebP or GIF image"),
    (png(1)[:60], "damaged image data"),
    (cut("JPEG"), "damaged image data"),
    (cut("WEBP"), "unreadable image"),
])
async def test_bad_bytes_from_the_seller_show_a_reason(blob: bytes, reason: str) -> None:
    client = FakeClient()
    client.images[image_ref(1).sha256] = blob
    async with app_over(client).run_test(size=(80, 24)) as pilot:
        screen = await open_listing(pilot)
        caption, text = preview_text(screen)
        assert caption.startswith("[image 1/2: ")
        assert text.startswith("image unavailable: ") and reason in text
        assert pictures(screen) == 0
        await pilot.press("right_square_bracket")  # the next one is fine
        await settle(pilot)
        assert preview_text(screen)[1] == "" and pictures(screen) == 1


async def test_an_image_the_node_cannot_get_shows_the_api_error() -> None:
    client = FakeClient()
    del client.images[image_ref(1).sha256]
    async with app_over(client).run_test(size=(80, 24)) as pilot:
        screen = await open_listing(pilot)
        assert preview_text(screen)[1] == (
            "image unavailable: Not found: this node does not have that image")


def bomb(width: int, height: int) -> bytes:
    """A small PNG whose header claims `width` x `height` pixels (CRC fixed up)."""
    data = bytearray(png(1))
    ihdr = 8 + 8  # signature, then length and type of the first chunk
    data[ihdr:ihdr + 8] = struct.pack(">II", width, height)
    crc = zlib.crc32(bytes(data[ihdr - 4:ihdr + 13]))
    data[ihdr + 13:ihdr + 17] = struct.pack(">I", crc)
    return bytes(data)


def test_decode_refuses_decompression_bombs_before_decoding() -> None:
    side = int(MAX_PIXELS ** 0.5) + 100  # above our limit, below Pillow's own warning
    with pytest.raises(ValueError, match=f"{side}x{side} pixels is more than a preview"):
        decode(bomb(side, side), (640, 400))


def test_decode_makes_a_bounded_rgb_thumbnail() -> None:
    picture = Image.new("RGBA", (3000, 1000), (255, 0, 0, 0))
    out = io.BytesIO()
    picture.save(out, "PNG")
    thumb = decode(out.getvalue(), (640, 400))
    assert thumb.mode == "RGB" and thumb.size == (640, 213)
    assert thumb.getpixel((0, 0)) == (255, 255, 255)  # transparency over white
    assert fit(thumb.size, (32, 10)) == (32, 5)
    assert fit((48, 64), (32, 10)) == (15, 10)
    assert label([image_ref(1), image_ref(2)], 1).startswith("[image 2/2: ")


# -- the Sell forms ----------------------------------------------------------------------------


def write_png(path: Path, colour: tuple[int, int, int]) -> Path:
    Image.new("RGB", (20, 10), colour).save(path, "PNG")
    return path


async def new_listing_form(pilot: Pilot[Any], images: str) -> FormScreen:
    await pilot.press("f4")
    await settle(pilot)
    await pilot.press("n")
    await settle(pilot)
    form = pilot.app.screen
    assert isinstance(form, FormScreen)
    for name, value in {"title": "Desk lamp", "price": "12.50", "category": "home",
                        "country": "DE", "geohash": "u33db", "images": images}.items():
        form.query_one(f"#f-{name}", Input).value = value
    return form


async def test_new_listing_uploads_its_image_files(tmp_path: Path) -> None:
    client = FakeClient()
    a = write_png(tmp_path / "a.png", (200, 30, 30))
    b = write_png(tmp_path / "b.png", (30, 30, 200))
    async with app_over(client).run_test(size=(80, 24)) as pilot:
        await new_listing_form(pilot, f" {a} ,{b}, ")
        await pilot.press("ctrl+s")
        await settle(pilot)
        assert not isinstance(pilot.app.screen, FormScreen)
    uploads = [args for name, args in client.calls if name == "upload_image"]
    assert uploads == [(a.read_bytes(), "image/png"), (b.read_bytes(), "image/png")]
    created = client.mine[-1]
    assert created.title == "Desk lamp"
    assert [(i.sha256, i.mime, i.size) for i in created.images] == [
        (client_sha(client, a), "image/png", a.stat().st_size),
        (client_sha(client, b), "image/png", b.stat().st_size)]


def client_sha(client: FakeClient, path: Path) -> str:
    return next(sha for sha, data in client.images.items() if data == path.read_bytes())


async def test_home_directory_paths_expand(tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    write_png(tmp_path / "photo.png", (0, 120, 0))
    client = FakeClient()
    async with app_over(client).run_test(size=(80, 24)) as pilot:
        await new_listing_form(pilot, "~/photo.png")
        await pilot.press("ctrl+s")
        await settle(pilot)
    assert len(client.mine[-1].images) == 1


@pytest.mark.parametrize(("name", "content", "message"), [
    ("missing.png", None, "cannot read {path}: No such file or directory"),
    ("notes.png", b"just some text\n", "{path} is not a JPEG, PNG, WebP or GIF image"),
    ("empty.png", b"", "{path} is empty"),
    ("huge.png", b"\x89PNG\r\n\x1a\n" + bytes(2_000_000),
     "{path} has 2,000,008 bytes; an image may have 2,000,000 bytes at most"),
    ("folder.png", "dir", "{path} is not a file"),
])
async def test_a_bad_image_file_is_the_fields_error_and_nothing_is_uploaded(
        tmp_path: Path, name: str, content: bytes | str | None, message: str) -> None:
    good = write_png(tmp_path / "good.png", (1, 2, 3))
    bad = tmp_path / name
    if content == "dir":
        bad.mkdir()
    elif isinstance(content, bytes):
        bad.write_bytes(content)
    client = FakeClient()
    async with app_over(client).run_test(size=(80, 24)) as pilot:
        form = await new_listing_form(pilot, f"{good}, {bad}")
        await pilot.press("ctrl+s")
        await settle(pilot)
        assert pilot.app.screen is form
        error = form.query_one("#err-images", Static)
        assert error.has_class("shown")
        assert str(error.render()).startswith(message.format(path=bad))
    assert not [c for c in client.calls if c[0] in ("upload_image", "create_listing")]


async def test_too_many_images(tmp_path: Path) -> None:
    client = FakeClient()
    async with app_over(client).run_test(size=(80, 24)) as pilot:
        form = await new_listing_form(pilot, ",".join(["a.png"] * 9))
        await pilot.press("ctrl+s")
        await settle(pilot)
        assert str(form.query_one("#err-images", Static).render()) == (
            "9 images: a listing has 8 at most")


async def test_edit_keeps_images_unless_given_new_files(tmp_path: Path) -> None:
    client = FakeClient()
    kept = [image_ref(1)]
    client.mine[0] = msgspec.structs.replace(client.mine[0], images=kept)
    new = write_png(tmp_path / "new.png", (9, 9, 9))
    async with app_over(client).run_test(size=(80, 24)) as pilot:
        await pilot.press("f4")
        await settle(pilot)
        await pilot.press("e")
        await settle(pilot)
        await pilot.press("ctrl+s")  # images left empty
        await settle(pilot)
        assert client.mine[0].images == kept
        edit = [args for name, args in client.calls if name == "edit_listing"][-1]
        assert "images" not in edit[1]

        await pilot.press("e")
        await settle(pilot)
        pilot.app.screen.query_one("#f-images", Input).value = str(new)
        await pilot.press("ctrl+s")
        await settle(pilot)
    assert [i.size for i in client.mine[0].images] == [new.stat().st_size]


# -- through a real node -----------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(90)
async def test_a_sellers_image_reaches_the_buyers_listing_screen(tmp_path: Path) -> None:
    hosts = memory_hosts()
    async with dht_network(6) as backbone, \
            api_node(backbone, tmp_path / "seller", host=hosts) as seller, \
            api_node(backbone, tmp_path / "buyer", host=hosts) as buyer:
        ref = await seller.client.upload_image(png(2), "image/png")
        await seller.client.create_listing({
            "title": "Desk lamp", "price": {"amount": 1_250, "currency": "EUR"},
            "category": "home", "condition": "good", "id": "desk-lamp-1",
            "location": {"country": "DE", "geohash": "u33dbfc"}, "images": [ref]})
        client = Client.from_datadir(buyer.datadir, timeout=30)
        listing = await client.get_listing(seller.peer_id, "desk-lamp-1")
        app = make_app(client, live=False)
        async with app.run_test(size=(80, 24)) as pilot:
            await app.push_screen(ListingScreen(listing))
            await until(pilot, lambda: isinstance(app.screen, ListingScreen))
            screen = app.screen
            assert isinstance(screen, ListingScreen)
            try:  # the buyer's node fetches the bytes from the seller (blob protocol)
                await until(pilot, lambda: pictures(screen) == 1 or bool(
                    preview_text(screen)[1].startswith("image un")), timeout=45)
            except TimeoutError:
                pytest.fail(f"no picture after 45 s; the preview says {preview_text(screen)}")
            assert preview_text(screen) == (f"[image 1/1: {ref.sha256[:7]}, image/png]", "")
            assert not {"left_square_bracket", "right_square_bracket"} & set(
                screen.active_bindings)  # one image: nothing to step through
        # the buyer's node fetched the bytes from the seller and keeps them
        assert await buyer.client.get_image(ref.sha256) == png(2)

