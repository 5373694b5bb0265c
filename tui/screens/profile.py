"""Profile screen: my public profile (name, bio, location; signed and published in the DHT) with
an edit form, the reviews buyers left for me with my rating, and (p) my records in the DHT."""

from __future__ import annotations

from datetime import UTC, datetime

import msgspec
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.widgets import DataTable, Footer, Header, Static

from p2pmarket.api.schemas import ProfileOut
from p2pmarket.client import Event
from tui.base import BaseScreen, data_table
from tui.format import esc, plain
from tui.screens.records import RecordsScreen
from tui.widgets.forms import Field, FieldInvalid, FormScreen
from tui.widgets.images import ImagePreview, read_image_files

AVATAR_BOX = (16, 5)  # cells: my picture beside the profile text


def stars(n: int) -> str:
    return "★" * n + "☆" * (5 - n)


def profile_text(p: ProfileOut) -> str:
    if not p.found:
        head = "[b](no profile yet)[/b] · buyers see only your peer id: press e to publish one"
    else:
        head = f"[b]{esc(p.name)}[/b]"
    where = (f"{p.location.country} ({p.location.geohash})" if p.location else
             "no location (searches near you need one)")
    rating = (f"★ {p.rating:.1f} from {p.reviews} review(s)" if p.rating is not None
              else "no reviews yet")
    lines = [head, f"{p.peer}", f"{where} · {rating}"]
    if p.bio:
        lines += ["", esc(p.bio)]
    return "\n".join(lines)


def profile_fields(values: dict[str, str], current: ProfileOut) -> dict[str, object]:
    """The form's values as the API's `ProfileFields` (the API validates them); the avatar is
    kept as it is (a new one replaces it in `submit`)."""
    fields: dict[str, object] = {"name": values["name"].strip(), "bio": values["bio"]}
    country, geohash = values["country"].strip().upper(), values["geohash"].strip().lower()
    if country or geohash:
        fields["location"] = {"country": country, "geohash": geohash}
    if current.avatar is not None:
        fields["avatar"] = {"sha256": current.avatar.sha256, "mime": current.avatar.mime,
                            "size": current.avatar.size}
    return fields


class ProfileScreen(BaseScreen):
    BINDINGS = [
        Binding("e", "edit", "Edit profile", id="profile.edit"),
        Binding("p", "records", "My records", id="profile.records"),
        Binding("r", "refresh", "Refresh", id="profile.refresh"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.profile: ProfileOut | None = None

    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal(id="profile-top"):
            yield Static("Loading my profile…", id="my-profile")
            yield ImagePreview(self.client, [], "", box=AVATAR_BOX, id="my-avatar")
        yield data_table("my-reviews", (("Stars", "stars", 6), ("Review", "text", 48),
                                  ("Date", "date", 10)))
        yield Static("", id="reviews-status")
        yield Footer(compact=True)

    @work(exclusive=True, group="profile")
    async def load(self) -> None:
        profile = await self.call(self.client.get_my_profile(), "My profile")
        if profile is None:
            self.query_one("#my-profile", Static).update("The node does not answer.")
            return
        self.profile = profile
        self.query_one("#my-profile", Static).update(profile_text(profile))
        self.query_one("#my-avatar", ImagePreview).set_images(
            [profile.avatar] if profile.avatar else [], profile.peer)
        page = await self.call(self.client.list_reviews(profile.peer, page_size=100), "Reviews")
        status = self.query_one("#reviews-status", Static)
        if page is None:
            status.update("Reviews could not be read.")
            return
        table = self.query_one("#my-reviews", DataTable)
        table.clear()
        for n, r in enumerate(page.items):
            day = datetime.fromtimestamp(r.created, UTC).strftime("%Y-%m-%d")
            table.add_row(*plain(stars(r.rating), r.text or "(no text)", day),
                          key=f"{r.order_id}-{n}")
        status.update(f"{len(page.items)} review(s); only buyers of an order can review."
                      if page.items else
                      "No reviews yet: buyers review you after they received an order.")

    def action_edit(self) -> None:
        current = self.profile
        if current is None:
            return

        async def submit(values: dict[str, str]) -> None:
            fields = profile_fields(values, current)
            if values["avatar"].strip():  # one image file, checked before it is uploaded
                try:
                    files = await read_image_files(values["avatar"])
                except ValueError as exc:
                    raise FieldInvalid("avatar", str(exc)) from None
                if len(files) != 1:
                    raise FieldInvalid("avatar", "one image file")
                ref = await self.client.upload_image(*files[0])
                fields["avatar"] = msgspec.to_builtins(ref)
            await self.client.put_my_profile(fields)

        loc = current.location
        fields = [
            Field("name", "Name", current.name),
            Field("bio", "About me", current.bio),
            Field("country", "Country", loc.country if loc else "", placeholder="DE",
                  api="location/country"),
            Field("geohash", "Geohash", loc.geohash if loc else "", placeholder="u33db",
                  api="location/geohash"),
            Field("avatar", "Picture", placeholder=(
                "an image file replaces your picture" if current.avatar else
                "an image file (PNG, JPEG, WebP, GIF)")),
        ]

        def after(ok: bool | None) -> None:
            if ok:
                self.notify("Profile published.", title="Profile")
                self.load()
        self.app.push_screen(FormScreen("My profile", fields, submit,
                                        note="Signed with your key and published in the DHT."),
                             after)

    def action_records(self) -> None:
        """My records in the DHT: expiry, last publication, what is stored nowhere."""
        self.app.push_screen(RecordsScreen())

    def live(self, event: Event) -> None:
        if event.type in ("review.published", "events.reset"):
            self.load()
