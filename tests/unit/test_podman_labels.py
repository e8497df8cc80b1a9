"""Several image labels are written as one quoted LABEL step (see ``_labelled``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from corral.engines.podman import _labelled, label_instruction

LABELS = {"io.corral.fleet": "shop", "io.corral.note": 'say "hi" to $USER \\o/'}


def test_each_key_and_value_is_one_double_quoted_word() -> None:
    assert label_instruction(LABELS) == (
        'LABEL "io.corral.fleet"="shop" "io.corral.note"="say \\"hi\\" to \\$USER \\\\o/"'
    )


@pytest.mark.parametrize("value", ["two\nlines", "a\rb", "tab\there", "bell\x07"])
def test_a_control_character_cannot_be_written_into_a_line(value: str) -> None:
    assert label_instruction({**LABELS, "io.corral.x": value}) is None


def _labelled_with(tmp_path: Path, text: str, labels: dict[str, str]) -> tuple[str, list[str]]:
    containerfile = tmp_path / "Containerfile"
    containerfile.write_text(text)
    with _labelled(containerfile, labels) as (path, flags):
        return path.read_text(), flags


def test_the_labels_go_at_the_end_of_a_copy_of_the_file(tmp_path: Path) -> None:
    text, flags = _labelled_with(tmp_path, "FROM base\nRUN true", LABELS)
    assert flags == []
    assert text == f"FROM base\nRUN true\n{label_instruction(LABELS)}\n"
    assert (tmp_path / "Containerfile").read_text() == "FROM base\nRUN true"  # untouched


@pytest.mark.parametrize(
    ("text", "labels"),
    [
        ("FROM base\n", {"io.corral.fleet": "shop"}),  # one label: one step either way
        ("FROM base\n", {**LABELS, "io.corral.x": "a\nb"}),
        ("# escape=`\nFROM base\n", LABELS),  # a backslash is no escape there
        ("FROM base\nRUN true \\\n", LABELS),  # the next line would continue that one
    ],
)
def test_otherwise_the_labels_stay_flags_and_the_file_as_it_is(
    tmp_path: Path, text: str, labels: dict[str, str]
) -> None:
    seen, flags = _labelled_with(tmp_path, text, labels)
    assert seen == text
    assert flags == [f for k, v in labels.items() for f in ("--label", f"{k}={v}")]
