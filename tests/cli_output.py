"""Reading what a rehearsal command printed and wrote (its rich tables and its --json file)."""

import json


def read_json(path) -> dict:
    """The --json file, refusing NaN/Infinity (plain JSON)."""
    def refuse(constant):
        raise ValueError(f"not plain JSON: {constant}")

    return json.loads(path.read_text(encoding="utf-8"), parse_constant=refuse)


def table_row(output: str, label: str) -> list[str]:
    """The cells of the rich table row whose first cell is ``label`` (a cell wrapped over several
    lines joined with spaces)."""
    found: list[str] | None = None
    for line in output.splitlines():
        cells = [c.strip() for c in line.split("│")[1:-1]]
        if found is None:
            found = cells if cells and cells[0] == label else None
        elif cells and not cells[0]:
            found = [" ".join(filter(None, pair)) for pair in zip(found, cells, strict=True)]
        else:
            return found
    if found is None:
        raise AssertionError(f"no row {label!r} in\n{output}")
    return found

