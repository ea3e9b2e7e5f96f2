"""What a person reads when the model service fails: one specific text per kind of failure,
each saying whether retrying may help, with fal's request id when there is one."""

from __future__ import annotations

import pytest

from bot.chat.texts import error_text
from bot.domain.errors import (
    FieldProblem,
    ModelAuthError,
    ModelCancelled,
    ModelError,
    ModelInputRejected,
    ModelProtocolError,
    ModelRateLimited,
    ModelSubmitUnknown,
    ModelTimeout,
    ModelUnavailable,
)

RID = "764cabcf-b745-4b3e-ae38-1200304cf45b"


@pytest.mark.parametrize(
    ("error", "says", "retry"),
    [
        (ModelTimeout("x", phase="queue", request_id=RID), "queue was too slow", "may help"),
        (ModelTimeout("x", phase="run", request_id=RID), "took too long to answer", "may help"),
        (ModelTimeout("x", silent_for=61.2), "kept failing for the last 61 s", "may help"),
        (ModelRateLimited("x", request_id=RID), "rate limiting the bot", "should help"),
        (ModelUnavailable("x", tried_for=42.4, request_id=RID), "kept failing for 42 s", "may"),
        (ModelUnavailable("x", request_id=RID), "unavailable right now", "may help"),
        (ModelSubmitUnknown("x"), "cannot tell whether it arrived", "may help"),
        (ModelAuthError("x", condition="out_of_credit"), "model account has a problem", "not"),
        (ModelAuthError("x", condition="key_refused"), "an admin was told", "will not help"),
        (ModelCancelled("x", request_id=RID), "cancelled before the model answered", "Retry"),
        (ModelProtocolError("x", request_id=RID), "answered something unexpected", "may help"),
        (
            ModelInputRejected(
                "x",
                (FieldProblem("image_urls", 0, "file_download_error", "Failed to download."),),
                request_id=RID,
            ),
            "could not use image 1: Failed to download",
            "will not help",
        ),
    ],
    ids=[
        "queue-timeout",
        "run-timeout",
        "fal-silent",
        "rate-limited",
        "unavailable-for",
        "unavailable",
        "submit-unknown",
        "out-of-credit",
        "key-refused",
        "cancelled",
        "protocol",
        "input-rejected",
    ],
)
def test_each_failure_has_its_own_text(error: ModelError, says: str, retry: str) -> None:
    text = error_text(error)

    assert says in text
    assert retry in text
    assert (f"(request `{RID}`)" in text) == (error.request_id is not None)
    assert text.count("..") == 0


def test_account_texts_do_not_tell_users_the_account_details() -> None:
    texts = {
        error_text(ModelAuthError("fal refused", condition=c))
        for c in ("key_refused", "no_permission", "account_locked", "out_of_credit")
    }
    assert len(texts) == 1
    assert "credit" not in texts.pop()
