"""Modal forms of the TUI: one generic form whose submit coroutine calls the API; a 422's field
errors appear under their inputs, other errors in the form's own error line."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.suggester import SuggestFromList
from textual.widgets import Button, Input, Label, Select, Static

from p2pmarket.client import ApiError, ClientError
from tui.format import describe_error, field_errors

log = logging.getLogger(__name__)


class FieldInvalid(ValueError):
    """Raised by a submit function for input the form can check before calling the API."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True, slots=True)
class Field:
    name: str
    label: str
    value: str = ""
    placeholder: str = ""
    choices: Sequence[str] = ()  # a Select instead of an Input
    api: str = ""  # the API's JSON pointer for this field when it is not `/<name>`
    suggest: Sequence[str] = ()  # completions offered while typing (→ accepts one)

    def owns(self, where: str) -> bool:
        """Whether an API error at `where` (pointer without the slash) belongs here."""
        path = self.api.strip("/") or self.name
        return where in (path, self.name) or where.startswith(path + "/")


Submit = Callable[[dict[str, str]], Awaitable[object]]


class FormScreen(ModalScreen[bool]):
    """`push_screen(FormScreen("Make offer", fields, submit), callback)`: dismisses True once
    `submit(values)` returned, False when cancelled."""

    BINDINGS = [
        Binding("escape", "cancel", "Cancel", id="form.cancel"),
        Binding("ctrl+s", "submit", "Submit", id="form.submit"),
    ]

    def __init__(self, title: str, fields: Sequence[Field], submit: Submit, *,
                 note: str = "", submit_label: str = "Submit") -> None:
        super().__init__()
        self.form_title, self.fields, self.submit_fn = title, list(fields), submit
        self.note, self.submit_label = note, submit_label
        self.busy = False

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Label(Text(self.form_title), id="form-title")  # titles name peers' things
            if self.note:
                yield Static(Text(self.note), id="form-note")
            with VerticalScroll(id="form-fields"):
                for f in self.fields:
                    with Horizontal(classes="form-row"):
                        yield Label(f.label, classes="form-label")
                        if f.choices:
                            yield Select([(c, c) for c in f.choices], value=f.value or f.choices[0],
                                         allow_blank=False, compact=True, id=f"f-{f.name}")
                        else:
                            suggester = (SuggestFromList(f.suggest, case_sensitive=False)
                                         if f.suggest else None)
                            yield Input(f.value, placeholder=f.placeholder, compact=True,
                                        id=f"f-{f.name}", suggester=suggester)
                    yield Static("", classes="form-error", id=f"err-{f.name}")
            yield Static("", classes="form-error", id="err-form")
            with Horizontal(id="form-buttons"):
                yield Button(self.submit_label, variant="primary", id="form-ok")
                yield Button("Cancel", id="form-cancel")

    def on_mount(self) -> None:
        if self.fields:
            self.query_one(f"#f-{self.fields[0].name}").focus()
        else:
            self.query_one("#form-ok", Button).focus()

    def values(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for f in self.fields:
            widget = self.query_one(f"#f-{f.name}")
            if isinstance(widget, Select):
                out[f.name] = str(widget.value)
            elif isinstance(widget, Input):
                out[f.name] = widget.value
        return out

    def show_errors(self, errors: dict[str, str]) -> None:
        """Each error under the field it belongs to; the others in the form's error line."""
        placed: set[str] = set()
        first: Static | None = None
        for f in self.fields:
            mine = [msg for where, msg in errors.items() if f.owns(where)]
            placed.update(where for where in errors if f.owns(where))
            box = self.query_one(f"#err-{f.name}", Static)
            box.update(Text("\n".join(mine)))
            box.set_class(bool(mine), "shown")
            if mine and first is None:
                first = box
        if first is not None:  # a long form: bring the first error (and its field) into view
            self.call_after_refresh(first.scroll_visible)
        general = [f"{k}: {v}" if k else v for k, v in errors.items() if k not in placed]
        box = self.query_one("#err-form", Static)
        box.update(Text("\n".join(general)))
        box.set_class(bool(general), "shown")

    async def action_submit(self) -> None:
        if self.busy:
            return
        self.busy = True
        try:
            await self.submit_fn(self.values())
        except FieldInvalid as exc:
            self.show_errors({exc.field: str(exc)})
        except ApiError as exc:
            log.info("form %r refused: %s", self.form_title, exc)
            errors = field_errors(exc)
            self.show_errors(errors or {"": describe_error(exc)})
            if not errors:
                self.notify(describe_error(exc), title=self.form_title, severity="error",
                            markup=False)
        except ClientError as exc:
            self.show_errors({"": describe_error(exc)})
        else:
            self.dismiss(True)
        finally:
            self.busy = False

    def action_cancel(self) -> None:
        self.dismiss(False)

    @on(Input.Submitted)
    async def _enter(self) -> None:
        await self.action_submit()

    @on(Button.Pressed, "#form-ok")
    async def _ok(self) -> None:
        await self.action_submit()

    @on(Button.Pressed, "#form-cancel")
    def _cancel(self) -> None:
        self.action_cancel()
