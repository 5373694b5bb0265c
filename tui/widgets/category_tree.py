"""The Market screen's category picker: a modal Tree of the node's taxonomy whose top categories
open to their subcategories. Enter chooses (a top category means all of it), typing filters."""

from __future__ import annotations

from collections.abc import Iterable

from rich.text import Text
from textual import events, on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, Label, Static, Tree

ANY = ""  # what the picker answers for "any category"; None means it was cancelled
HINT = "Enter choose  → ← open/close  type to filter  Esc cancel"


def taxonomy(paths: Iterable[str]) -> dict[str, list[str]]:
    """`top` and `top/sub` paths (as `GET /categories` answers) -> {top: [sub, ...]}, in order."""
    tops: dict[str, list[str]] = {}
    for path in paths:
        top, _, sub = path.partition("/")
        subs = tops.setdefault(top, [])
        if sub:
            subs.append(sub)
    return tops


def category_label(path: str | None) -> str:
    """How the filter bar shows a choice: `sports › bikes`, `all of sports`, `any category`."""
    if not path:
        return "any category"
    top, _, sub = path.partition("/")
    return f"{top} › {sub}" if sub else f"all of {top}"


class CategoryPicker(ModalScreen[str | None]):
    """`push_screen(CategoryPicker(paths, current), callback)`: the callback gets a path, `ANY`
    for "any category", or None when the user cancelled."""

    BINDINGS = [
        Binding("escape", "cancel", "Cancel", id="category.cancel"),
        Binding("right", "expand", "Open", id="category.open", show=False),
        Binding("left", "collapse", "Close", id="category.close", show=False),
        # reach the tree while the filter box has focus (the Input does not use up/down)
        Binding("down", "cursor('down')", "Down", id="category.down", show=False),
        Binding("up", "cursor('up')", "Up", id="category.up", show=False),
    ]

    def __init__(self, paths: Iterable[str], current: str | None = None) -> None:
        super().__init__()
        self.tops = taxonomy(paths)
        self.current = current or ANY

    def compose(self) -> ComposeResult:
        with Vertical(id="category-dialog"):
            yield Label("Category", id="category-title")
            yield Input(placeholder="type to filter…", id="category-filter", compact=True,
                        select_on_focus=False)
            tree: Tree[str] = Tree("categories", id="category-tree")
            tree.show_root = False
            tree.auto_expand = False  # Enter chooses; → and ← open and close
            yield tree
            yield Static(HINT, id="category-hint")

    def on_mount(self) -> None:
        self.fill("")
        self.query_one(Tree).focus()

    def fill(self, needle: str) -> None:
        """Rebuild the tree: everything, or the categories whose name contains `needle`; the
        cursor goes to the current choice, or to the first match when filtering."""
        tree: Tree[str] = self.query_one(Tree)
        tree.clear()
        lines: list[str] = []  # the path on each visible line, to place the cursor
        if not needle:
            tree.root.add_leaf(self.name_of("any category", ANY), data=ANY)
            lines.append(ANY)
        current_top = self.current.partition("/")[0]
        matches: list[str] = []
        for top, subs in self.tops.items():
            whole = needle in top
            shown = subs if whole else [s for s in subs if needle in s]
            if not whole and not shown:
                continue
            opened = bool(needle and not whole) or (not needle and top == current_top)
            node = tree.root.add(self.name_of(top, top, bold=True), data=top, expand=opened,
                                 allow_expand=bool(shown))
            lines.append(top)
            if whole:
                matches.append(top)
            for sub in shown:
                path = f"{top}/{sub}"
                node.add_leaf(self.name_of(sub, path), data=path)
                if opened:
                    lines.append(path)
                    if not whole:
                        matches.append(path)
        if not lines:
            tree.root.add_leaf(Text(f"no category has {needle!r} in its name", style="italic"))
        if needle:
            target = lines.index(matches[0]) if matches else 0
        else:
            target = lines.index(self.current) if self.current in lines else 0
        tree.move_cursor_to_line(target)

    def name_of(self, text: str, path: str, *, bold: bool = False) -> Text:
        label = Text(text, style="bold" if bold else "")
        if path == self.current:
            label.append(" ✓", style="bold")
        return label

    def choose(self) -> None:
        node = self.query_one(Tree).cursor_node
        if node is not None and node.data is not None:
            self.dismiss(node.data)

    # -- actions and events ----------------------------------------------------------------

    def action_cancel(self) -> None:
        self.dismiss(None)

    def action_cursor(self, direction: str) -> None:
        tree = self.query_one(Tree)
        tree.action_cursor_down() if direction == "down" else tree.action_cursor_up()

    def action_expand(self) -> None:
        node = self.query_one(Tree).cursor_node
        if node is not None and node.allow_expand:
            node.expand()

    def action_collapse(self) -> None:
        tree: Tree[str] = self.query_one(Tree)
        node = tree.cursor_node
        if node is None:
            return
        if node.allow_expand and node.is_expanded:
            node.collapse()
        elif node.parent is not None and not node.parent.is_root:
            tree.move_cursor(node.parent)

    @on(Tree.NodeSelected, "#category-tree")
    def _selected(self, event: Tree.NodeSelected[str]) -> None:
        event.stop()
        if event.node.data is not None:
            self.dismiss(event.node.data)

    @on(Input.Changed, "#category-filter")
    def _filter(self, event: Input.Changed) -> None:
        self.fill(event.value.strip().lower())

    @on(Input.Submitted, "#category-filter")
    def _submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.choose()

    def on_key(self, event: events.Key) -> None:
        """Letters typed on the tree go to the filter box (type-ahead)."""
        box = self.query_one("#category-filter", Input)
        if box.has_focus:
            return
        if (event.is_printable and event.character and event.character != " ") \
                or (event.key == "backspace" and box.value):
            event.stop()
            box.focus()
            if event.key == "backspace":
                box.value = box.value[:-1]
            else:
                box.insert_text_at_cursor(event.character or "")
