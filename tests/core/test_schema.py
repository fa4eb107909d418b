"""gateway.core.schema: the wedding document's fields (proto/schema.md). Pure and table-driven."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.core import schema

# Values of each kind of field. pycrdt writes every number as a float, so 120.0 is an integer.
NAME = ["A", "Ana Silva", "x" * 200, "Zoë 🎉", "line\nbreak"]
NOT_NAME = ["", "x" * 201, None, 5, 5.0, True, ["Ana"], {"a": 1}]
STATUS = ["planning", "confirmed", "completed", "cancelled"]
NOT_STATUS = ["Planning", "draft", "", " planning", None, 0, True, ["planning"]]
DATE = ["2027-06-12", "2028-02-29", "2000-02-29", "0001-01-01", "9999-12-31", "2027-12-31"]
NOT_DATE = [
    "2027-02-30",  # no such day
    "2027-02-29",  # not a leap year
    "1900-02-29",  # not a leap year either (century)
    "2027-13-01",
    "2027-00-10",
    "2027-06-00",
    "2027-6-12",
    "27-06-12",
    "20270612",  # ISO basic format: Python 3.11's fromisoformat would take it
    "2027-06-12T10:00",
    "2027-06-12 ",
    "2027/06/12",
    "٢٠٢٧-٠٦-١٢",  # Arabic-Indic digits: re's [0-9] is ASCII only
    "",
    None,
    20270612,
]
TIME = ["00:00", "07:30", "12:05", "16:30", "23:59", "19:00"]
NOT_TIME = [
    "24:00",
    "7:30",
    "07:60",
    "23:5",
    "007:30",
    "07:30:00",
    "07.30",
    " 07:30",
    "07:30\n",
    "",
    None,
    730,
    7.5,
]
ZONE = ["Europe/Lisbon", "America/New_York", "UTC", "Asia/Kolkata", "America/Argentina/Salta"]
NOT_ZONE = ["europe/lisbon", "Lisbon", "Europe/Atlantis", "GMT+25", "+01:00", "", None, 0]
GUESTS = [0, 1, 120, 120.0, 5000, 5000.0, 0.0]
NOT_GUESTS = [-1, -1.0, 5001, 5000.5, 120.5, True, False, "120", None, float("nan"), float("inf")]
IDENTIFIER = ["a", "dinner", "caterer-42", "A_b-9", "x" * 64]
NOT_IDENTIFIER = ["", "x" * 65, "has space", "dîner", "a/b", "a.b", "dinner\n", None, 42]
ADDRESS = ["A", "Rua das Flores 12\n2710 Sintra", "x" * 500]
NOT_ADDRESS = ["", "x" * 501, None, 12]
CORE_NOTES = ["", "Cake arrives at 14:00.", "x" * 5000]
NOT_CORE_NOTES = ["x" * 5001, None, 1, ["note"]]
LOCATION = ["", "Garden", "x" * 200]
NOT_LOCATION = ["x" * 201, None, 3]
ENTRY_NOTES = ["", "Two vegan menus.", "x" * 2000]
NOT_ENTRY_NOTES = ["x" * 2001, None, 3.0]

CORE_FIELDS: dict[str, tuple[list[Any], list[Any]]] = {
    "partner_a": (NAME, NOT_NAME),
    "partner_b": (NAME, NOT_NAME),
    "status": (STATUS, NOT_STATUS),
    "wedding_date": (DATE, NOT_DATE),
    "ceremony_time": (TIME, NOT_TIME),
    "timezone": (ZONE, NOT_ZONE),
    "venue": (NAME, NOT_NAME),
    "venue_address": (ADDRESS, NOT_ADDRESS),
    "guest_count": (GUESTS, NOT_GUESTS),
    "notes": (CORE_NOTES, NOT_CORE_NOTES),
}
ENTRY_FIELDS: dict[str, tuple[list[Any], list[Any]]] = {
    "id": (IDENTIFIER, NOT_IDENTIFIER),
    "title": (NAME, NOT_NAME),
    "start": (TIME, NOT_TIME),
    "end": (TIME, NOT_TIME),
    "vendor_id": (IDENTIFIER, NOT_IDENTIFIER),
    "location": (LOCATION, NOT_LOCATION),
    "notes": (ENTRY_NOTES, NOT_ENTRY_NOTES),
}


def cases(fields: dict[str, tuple[list[Any], list[Any]]], index: int) -> list[Any]:
    return [
        pytest.param(key, value, id=f"{key}={value!r:.24}")
        for key, values in fields.items()
        for value in values[index]
    ]


DINNER = {"id": "dinner", "title": "Dinner", "start": "19:00"}


# -- fields ---------------------------------------------------------------------------------------


def test_the_tables_cover_every_field_of_the_schema() -> None:
    assert set(CORE_FIELDS) == set(schema.CORE)
    assert set(ENTRY_FIELDS) == set(schema.ENTRY)


@pytest.mark.parametrize(("key", "value"), cases(CORE_FIELDS, 0))
def test_valid_core_value_is_accepted(key: str, value: Any) -> None:
    assert schema.check_field(schema.CORE, key, value) is None


@pytest.mark.parametrize(("key", "value"), cases(CORE_FIELDS, 1))
def test_invalid_core_value_is_refused_with_a_reason(key: str, value: Any) -> None:
    reason = schema.check_field(schema.CORE, key, value)
    assert isinstance(reason, str)
    assert reason


@pytest.mark.parametrize(("key", "value"), cases(ENTRY_FIELDS, 0))
def test_valid_entry_value_is_accepted(key: str, value: Any) -> None:
    assert schema.check_field(schema.ENTRY, key, value) is None


@pytest.mark.parametrize(("key", "value"), cases(ENTRY_FIELDS, 1))
def test_invalid_entry_value_is_refused_with_a_reason(key: str, value: Any) -> None:
    reason = schema.check_field(schema.ENTRY, key, value)
    assert isinstance(reason, str)
    assert reason


@pytest.mark.parametrize(
    ("fields", "key"),
    [
        (schema.CORE, "budget"),
        (schema.CORE, "id"),  # an entry's key, not core's
        (schema.CORE, "Venue"),
        (schema.CORE, ""),
        (schema.ENTRY, "status"),  # core's key, not an entry's
        (schema.ENTRY, "price"),
    ],
)
def test_key_not_in_the_schema_is_refused(fields: Any, key: str) -> None:
    reason = schema.check_field(fields, key, "anything")
    assert reason == "is not a field of the schema (proto/schema.md)"


def test_required_keys_are_those_of_proto_schema_md() -> None:
    assert schema.REQUIRED_CORE == ("partner_a", "partner_b", "status")
    assert schema.REQUIRED_ENTRY == ("id", "title", "start")


@pytest.mark.parametrize(
    ("key", "value", "reason"),
    [
        ("partner_a", "", "must be 1-200 characters, not 0"),
        ("partner_a", "x" * 201, "must be 1-200 characters, not 201"),
        ("partner_a", None, "must be a string, not null"),
        ("venue", 5.0, "must be a string, not float"),
        (
            "status",
            "draft",
            "must be one of planning, confirmed, completed, cancelled, not 'draft'",
        ),
        ("wedding_date", "2027-02-30", "2027-02-30 is not a real date"),
        ("wedding_date", "12/06/2027", "must be a date YYYY-MM-DD, not '12/06/2027'"),
        ("ceremony_time", "24:00", "must be a time HH:MM, not '24:00'"),
        ("timezone", "Lisbon", "must be an IANA time zone name, not 'Lisbon'"),
        ("guest_count", 120.5, "must be an integer, not 120.5"),
        ("guest_count", True, "must be an integer, not bool"),
        ("guest_count", "120", "must be an integer, not str"),
        ("guest_count", 5001.0, "must be 0-5000, not 5001"),
        ("guest_count", -1, "must be 0-5000, not -1"),
    ],
)
def test_reason_says_what_is_wrong(key: str, value: Any, reason: str) -> None:
    found = schema.check_field(schema.CORE, key, value)
    assert found is not None
    assert found.replace("\N{EN DASH}", "-") == reason  # either dash reads as a range


def test_a_long_value_is_shortened_in_the_reason() -> None:
    reason = schema.check_field(schema.CORE, "status", "x" * 1000)
    assert reason is not None
    assert len(reason) < 120
    assert reason.endswith("...")


# -- spans and entries ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("entry", "reason"),
    [
        ({"start": "19:00", "end": "21:30"}, None),
        ({"start": "19:00", "end": "19:00"}, None),  # "not earlier than start"
        ({"start": "00:00", "end": "23:59"}, None),
        ({"start": "19:00"}, None),  # end is optional
        ({"end": "19:00"}, None),  # start missing: check_entry reports that, not check_span
        ({"start": "19:00", "end": "18:59"}, "end 18:59 is earlier than start 19:00"),
        ({"start": "23:30", "end": "00:30"}, "end 00:30 is earlier than start 23:30"),
        ({"start": "09:00", "end": "08:00"}, "end 08:00 is earlier than start 09:00"),
    ],
)
def test_check_span_refuses_an_end_before_the_start(
    entry: dict[str, Any], reason: str | None
) -> None:
    assert schema.check_span(entry) == reason


@pytest.mark.parametrize(
    "entry",
    [
        DINNER,
        {
            "id": "dinner",
            "title": "Dinner",
            "start": "19:00",
            "end": "21:30",
            "vendor_id": "caterer-42",
            "location": "Garden",
            "notes": "Two vegan menus.",
        },
        {**DINNER, "end": "19:00", "location": "", "notes": ""},
    ],
)
def test_check_entry_accepts_a_valid_entry(entry: dict[str, Any]) -> None:
    assert schema.check_entry(entry) is None


@pytest.mark.parametrize(
    ("entry", "key"),
    [
        ({"title": "Dinner", "start": "19:00"}, "id"),
        ({"id": "dinner", "start": "19:00"}, "title"),
        ({"id": "dinner", "title": "Dinner"}, "start"),
        ({}, "id"),
        ({**DINNER, "id": "no spaces"}, "id"),
        ({**DINNER, "title": ""}, "title"),
        ({**DINNER, "start": "7:00"}, "start"),
        ({**DINNER, "end": "24:00"}, "end"),
        ({**DINNER, "end": "18:00"}, "end"),  # before its start
        ({**DINNER, "vendor_id": "caterer 42"}, "vendor_id"),
        ({**DINNER, "location": "x" * 201}, "location"),
        ({**DINNER, "notes": "x" * 2001}, "notes"),
        ({**DINNER, "price": 12}, "price"),
        ({**DINNER, "status": "planning"}, "status"),
    ],
)
def test_check_entry_names_the_key_of_its_first_problem(entry: dict[str, Any], key: str) -> None:
    problem = schema.check_entry(entry)
    assert problem is not None
    assert problem[0] == key
    assert problem[1]


def test_check_entry_reports_a_missing_required_key_as_required() -> None:
    assert schema.check_entry({"id": "dinner", "title": "Dinner"}) == (
        "start",
        "is required in every timeline entry",
    )


def test_check_entry_checks_values_before_required_keys() -> None:
    assert schema.check_entry({"id": "dinner", "title": 5}) == (
        "title",
        "must be a string, not int",
    )


# -- time zones -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["localtime", "posixrules", "Factory"])
def test_host_files_that_are_no_time_zone_names_are_refused(name: str) -> None:
    # 'localtime' is the node's own zone (a symlink to /etc/localtime): no IANA name
    assert schema.time_zone(name) is not None
