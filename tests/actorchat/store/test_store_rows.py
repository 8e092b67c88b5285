"""Row values validate themselves, so a bad message fails alone, where it was made, and
never inside a group commit (see ``_rows.py``). Pure: no database."""

from __future__ import annotations

import math

import pytest

from actorchat.store import BatchResult, DedupeRow, MailRow, StoreBatch
from actorchat.store._schema import DEDUPE_COLUMNS, MAIL_COLUMNS, dedupe, mail

GOOD = {"recipient": "bob", "key": 1, "sender": "ann", "client_id": "c1", "body": "hi",
        "ts": 1.5, "grp": None, "media": None}


def test_a_valid_row_is_a_frozen_slotted_value() -> None:
    row = MailRow(**GOOD)
    assert row == MailRow(**GOOD) and hash(row) == hash(MailRow(**GOOD))
    with pytest.raises(AttributeError):  # immutable (a frozen msgspec Struct)
        row.body = "x"  # type: ignore[misc]
    assert not hasattr(row, "__dict__")
    MailRow(**{**GOOD, "grp": "g" * 64, "media": "{}", "ts": 3, "key": -(2**63)})


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("recipient", "r" * 65),
        ("sender", "a\x00b"),
        ("client_id", "c" * 129),
        ("body", "nul \x00 inside"),
        ("body", b"bytes"),
        ("key", 2**63),
        ("key", 1.0),
        ("key", True),
        ("ts", math.nan),
        ("ts", math.inf),
        ("ts", "1.0"),
        ("grp", "g" * 65),
        ("media", "\x00"),
    ],
)
def test_invalid_mail_rows_are_refused_naming_the_field(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=field):
        MailRow(**{**GOOD, field: value})


@pytest.mark.parametrize(
    ("field", "value"),
    [("sender", "s" * 65), ("client_id", "\x00"), ("recipient", 5), ("key", -(2**63) - 1),
     ("created_at", -math.inf)],
)
def test_invalid_dedupe_rows_are_refused_naming_the_field(field: str, value: object) -> None:
    good = {"sender": "ann", "client_id": "c", "recipient": "bob", "key": 1, "created_at": 0.0}
    DedupeRow(**good)
    with pytest.raises(ValueError, match=field):
        DedupeRow(**{**good, field: value})


def test_row_fields_follow_the_table_columns() -> None:
    # Store.fetch_mail builds MailRow(*row) from `SELECT *`-ordered columns.
    assert MailRow.__struct_fields__ == MAIL_COLUMNS
    assert tuple(c.name for c in mail.columns) == MAIL_COLUMNS
    assert DedupeRow.__struct_fields__ == DEDUPE_COLUMNS
    assert tuple(c.name for c in dedupe.columns) == DEDUPE_COLUMNS


def test_batch_truthiness_and_defaults() -> None:
    assert not StoreBatch()
    assert StoreBatch(last_seen=[("ann", 1.0)])
    assert StoreBatch(delete_mail=[("bob", 1)]).put_mail == ()
    assert BatchResult(1, 2, 3, 4, 0.5).seconds == 0.5
