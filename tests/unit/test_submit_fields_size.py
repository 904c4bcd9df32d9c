"""A submit's fields besides its images, as `[limits] max_fields_bytes` counts them: compact
JSON in UTF-8 bytes, and the largest field named for the 413."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from serve_app.http.models import SubmitTask

text = st.text(st.characters(blacklist_categories=("Cc", "Cs")), max_size=40)


def task(prompt: str, **more: Any) -> SubmitTask:
    return SubmitTask.model_validate(
        {"kind": "photography", "prompt": prompt, "images": {"person": "aGk="}, **more}
    )


@given(text, st.from_regex(r"\A[A-Za-z0-9._@:-]{1,20}\Z"), st.integers(0, 2**31 - 1))
def test_the_size_is_the_compact_utf8_json_of_the_fields_besides_the_images(
    prompt: str, user: str, seed: int
) -> None:
    body = task(prompt, user_id=user, options={"seed": seed})
    fields = body.model_dump(mode="json", exclude={"images"}, exclude_none=True)
    assert body.fields_bytes() == len(json.dumps(fields, ensure_ascii=False, separators=(",", ":")).encode())


def test_the_largest_field_is_named() -> None:
    assert task("p" * 500, user_id="u").largest_field() == "prompt"
    # 60 characters, 120 bytes in UTF-8: the prompt outweighs a user id of 110, not one of 125.
    assert task("é" * 60, user_id="u" * 125).largest_field() == "user_id"
    assert task("é" * 60, user_id="u" * 110).largest_field() == "prompt"
