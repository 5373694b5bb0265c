"""Listing images in the TUI: `ImagePreview` fetches one image at a time through the node's API,
decodes it with Pillow into a bounded thumbnail and draws it with textual-image; image files for
the Sell forms are checked here before anything is uploaded."""

from __future__ import annotations

import asyncio
import io
import logging
import stat
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

from PIL import Image, ImageOps, UnidentifiedImageError
from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.containers import Container, Vertical
from textual.widget import Widget
from textual.widgets import Static

from p2pmarket.api.schemas import ImageRef
from p2pmarket.client import ClientError
from p2pmarket.wire.bodies import MAX_IMAGE_BYTES, Mime
from tui.format import describe_error

log = logging.getLogger(__name__)

# A 2 MB PNG can claim 50000x50000 pixels; Pillow's own guard (Image.MAX_IMAGE_PIXELS, ~89M,
# process-wide) is far above what a preview needs, so refuse bigger images before decoding.
MAX_PIXELS = 20_000_000
MAX_FILES = 8  # ListingFields.images
FORMATS = ("PNG", "JPEG", "WEBP", "GIF")  # the API's Mime types; no other Pillow decoder runs
CELL_PX = (20, 40)  # thumbnails are big enough for cells this large, and no bigger
BOX = (32, 10)  # the preview's picture area in cells
BACKDROP = (255, 255, 255)  # what transparent pixels become
MAGIC: tuple[tuple[bytes, Mime], ...] = (  # the node checks uploads against the same signatures
    (b"\x89PNG\r\n\x1a\n", "image/png"), (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF87a", "image/gif"), (b"GIF89a", "image/gif"))

Renderer = Callable[[Image.Image], Widget]


def _renderers() -> tuple[Renderer, Renderer] | None:
    """(the best renderer for this terminal, half-blocks), or None when there are none.

    textual-image asks the terminal what it supports when it is imported, which only works
    before Textual owns the terminal: this module is imported with the app, before it runs."""
    try:
        from textual_image.widget import HalfcellImage
        from textual_image.widget import Image as BestImage
    except Exception:  # 0.12 divides by zero on a pty without a size; pictures are a nicety
        log.warning("textual-image is unavailable: images show as text", exc_info=True)
        return None
    return BestImage, HalfcellImage


RENDERERS = _renderers()


class ImageSource(Protocol):
    async def get_image(self, sha256: str, *, peer: str | None = None) -> bytes: ...


def label(images: Sequence[ImageRef], index: int) -> str:
    """`[image 1/3: 1a2b3c4, image/png]`: what the preview says an image is."""
    ref = images[index]
    return f"[image {index + 1}/{len(images)}: {ref.sha256[:7]}, {ref.mime}]"


def decode(data: bytes, max_size: tuple[int, int]) -> Image.Image:
    """Untrusted bytes -> an RGB thumbnail within `max_size` pixels. Raises ValueError with a
    reason fit for the screen for anything that is not a sane PNG, JPEG, WebP or GIF."""
    try:
        source = Image.open(io.BytesIO(data), formats=FORMATS)
    except UnidentifiedImageError:
        raise ValueError("not a PNG, JPEG, WebP or GIF image") from None
    except Exception as exc:  # Pillow raises many types for malformed headers
        raise ValueError(f"unreadable image ({type(exc).__name__})") from None
    with source:
        width, height = source.size
        if width < 1 or height < 1 or width * height > MAX_PIXELS:
            raise ValueError(f"{width}x{height} pixels is more than a preview decodes")
        try:
            source.draft("RGB", max_size)  # JPEG decodes at 1/2, 1/4 or 1/8 scale
            source.thumbnail(max_size)
            picture = ImageOps.exif_transpose(source)
            if picture.mode in ("RGBA", "LA", "PA") or "transparency" in picture.info:
                rgba = picture.convert("RGBA")
                flat = Image.new("RGB", rgba.size, BACKDROP)
                flat.paste(rgba, mask=rgba.getchannel("A"))
                return flat
            return picture.convert("RGB")
        except Exception as exc:  # truncated or damaged data fails only now, in many ways
            raise ValueError(f"damaged image data ({type(exc).__name__})") from None


def fit(size: tuple[int, int], box: tuple[int, int]) -> tuple[int, int]:
    """(columns, rows) that show a picture of `size` pixels within `box`, keeping its shape
    (a terminal cell is about twice as tall as it is wide)."""
    width, height = size
    cols, rows = box
    needed = max(1, round(cols * height / width / 2))
    if needed <= rows:
        return cols, needed
    return max(1, min(cols, round(rows * 2 * width / height))), rows


class ImagePreview(Vertical):
    """One listing's images, one at a time in a fixed box, with a caption; `step(±1)` moves.

    In a headless app (tests) pictures are always half-blocks, so screenshots do not depend on
    the terminal that runs the tests."""

    DEFAULT_CSS = """
    ImagePreview { width: auto; height: auto; border: round $primary 40%; }
    ImagePreview > #image-slot { align: center middle; }
    ImagePreview > #image-caption { height: 1; color: $text-muted; }
    ImagePreview .image-text { width: 1fr; height: auto; color: $text-muted;
                               text-align: center; }
    """

    def __init__(self, source: ImageSource, images: Sequence[ImageRef], peer: str, *,
                 box: tuple[int, int] = BOX, id: str | None = None) -> None:
        super().__init__(id=id)
        self.source, self.images, self.peer, self.box = source, list(images), peer, box
        self.index = 0
        self.pictures: dict[str, Image.Image] = {}  # sha256 -> thumbnail
        self.failures: dict[str, str] = {}  # sha256 -> why its bytes do not decode
        self.display = bool(self.images)

    def compose(self) -> ComposeResult:
        slot = Container(id="image-slot")
        slot.styles.width, slot.styles.height = self.box
        yield slot
        caption = Static(id="image-caption")
        caption.styles.width = self.box[0]
        yield caption

    def on_mount(self) -> None:
        self.show(0)

    def set_images(self, images: Sequence[ImageRef], peer: str) -> None:
        if list(images) == self.images and peer == self.peer:
            return
        self.images, self.peer = list(images), peer
        self.display = bool(self.images)
        self.show(0)

    def step(self, delta: int) -> None:
        if len(self.images) > 1:
            self.show((self.index + delta) % len(self.images))

    def show(self, index: int) -> None:
        if not self.images:
            return
        self.index = index
        ref = self.images[index]
        self.query_one("#image-caption", Static).update(Text(label(self.images, index)))
        if ref.sha256 in self.pictures:
            self._picture(self.pictures[ref.sha256])
        elif ref.sha256 in self.failures:
            self._text(f"image unavailable: {self.failures[ref.sha256]}")
        elif RENDERERS is None:
            self._text("this terminal shows no pictures")
        else:
            self._text("loading…")
            self.load(ref)

    @work(exclusive=True, group="image")
    async def load(self, ref: ImageRef) -> None:
        try:
            data = await self.source.get_image(ref.sha256, peer=self.peer)
        except ClientError as exc:  # not remembered: the seller may be back later
            log.info("image %s: %s", ref.sha256, exc)
            self._loaded(ref, f"image unavailable: {describe_error(exc)}")
            return
        max_size = (self.box[0] * CELL_PX[0], self.box[1] * CELL_PX[1])
        try:
            picture = await asyncio.to_thread(decode, data, max_size)
        except ValueError as exc:
            log.info("image %s from %s: %s", ref.sha256, self.peer, exc)
            self.failures[ref.sha256] = str(exc)
            self._loaded(ref, f"image unavailable: {exc}")
            return
        self.pictures[ref.sha256] = picture
        self._loaded(ref, picture)

    def _loaded(self, ref: ImageRef, what: Image.Image | str) -> None:
        if self.images and self.images[self.index] == ref:  # not stepped away meanwhile
            if isinstance(what, str):
                self._text(what)
            else:
                self._picture(what)

    def _text(self, text: str) -> None:
        slot = self.query_one("#image-slot", Container)
        slot.remove_children()
        slot.mount(Static(Text(text), classes="image-text"))

    def _picture(self, picture: Image.Image) -> None:
        assert RENDERERS is not None  # pictures are only decoded when there are renderers
        best, halfcell = RENDERERS
        widget = (halfcell if self.app.is_headless else best)(picture)
        widget.styles.width, widget.styles.height = fit(picture.size, self.box)
        slot = self.query_one("#image-slot", Container)
        slot.remove_children()
        slot.mount(widget)


def sniff(data: bytes) -> Mime | None:
    for magic, mime in MAGIC:
        if data.startswith(magic):
            return mime
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return None


def split_paths(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def read_image_file(raw: str) -> tuple[bytes, Mime]:
    """One image file named in a form -> (bytes, mime); ValueError with a reason to show."""
    path = Path(raw).expanduser()
    too_big = f"an image may have {MAX_IMAGE_BYTES:,} bytes at most"
    try:
        info = path.stat()
        if not stat.S_ISREG(info.st_mode):  # a directory, or a pipe that would block the read
            raise ValueError(f"{raw} is not a file")
        if info.st_size > MAX_IMAGE_BYTES:
            raise ValueError(f"{raw} has {info.st_size:,} bytes; {too_big}")
        with path.open("rb") as file:  # read no more than the limit if it grew meanwhile
            data = file.read(MAX_IMAGE_BYTES + 1)
    except OSError as exc:
        raise ValueError(f"cannot read {raw}: {exc.strerror or exc}") from None
    if not data:
        raise ValueError(f"{raw} is empty")
    if len(data) > MAX_IMAGE_BYTES:
        raise ValueError(f"{raw} grew past the limit: {too_big}")
    mime = sniff(data)
    if mime is None:
        raise ValueError(f"{raw} is not a JPEG, PNG, WebP or GIF image")
    return data, mime


async def read_image_files(text: str) -> list[tuple[bytes, Mime]]:
    """All files of a comma-separated list (`~` expands), each checked before any is used."""
    paths = split_paths(text)
    if len(paths) > MAX_FILES:
        raise ValueError(f"{len(paths)} images: a listing has {MAX_FILES} at most")
    return [await asyncio.to_thread(read_image_file, raw) for raw in paths]
