"""X-Fal-Billable-Units: read from the result (or the COMPLETED status when the result lacks
it), carried on the reply and on the error of a failed request; the real client against the
fake fal, which reports the header deterministically."""

from __future__ import annotations

import pytest

from bot.domain.errors import ModelInputRejected
from bot.domain.models import ModelRequest
from bot.fal import FalClient, wire
from tests.fakes.fal import UNITS_HEADER, FakeFal, billable_units


async def test_the_reply_carries_the_units_fal_reported(
    fake_fal: FakeFal, fal_model_client: FalClient
) -> None:
    handle = await fal_model_client.submit(ModelRequest(prompt="hello there"))
    reply = await fal_model_client.wait(handle, timeout=5)

    request = fake_fal.requests[handle.request_id]
    assert request.result_body is not None
    assert reply.billable_units == billable_units(request.input, request.result_body)
    assert reply.billable_units is not None and reply.billable_units > 0


async def test_a_reply_without_the_header_has_no_units(
    fake_fal: FakeFal, fal_model_client: FalClient
) -> None:
    fake_fal.report_units = False
    handle = await fal_model_client.submit(ModelRequest(prompt="hello"))
    reply = await fal_model_client.wait(handle, timeout=5)

    assert reply.output == "echo: hello"
    assert reply.billable_units is None


async def test_a_rejected_input_reports_zero_units_on_its_error(
    fake_fal: FakeFal, fal_model_client: FalClient
) -> None:
    handle = await fal_model_client.submit(
        ModelRequest(prompt="hi", image_urls=("https://invalid.test/missing.png",))
    )
    with pytest.raises(ModelInputRejected) as caught:
        await fal_model_client.wait(handle, timeout=5)

    assert caught.value.billable_units == 0
    assert fake_fal.requests[handle.request_id].result_status == 422


@pytest.mark.parametrize(
    ("raw", "units"),
    [("120", 120), (" 7 ", 7), ("2.5", 3), ("0", 0), ("-1", None), ("abc", None), ("nan", None)],
)
def test_the_header_is_read_as_a_non_negative_whole_number(raw: str, units: int | None) -> None:
    assert wire.billable_units({UNITS_HEADER: raw}) == units


def test_no_header_is_no_figure() -> None:
    assert wire.billable_units({}) is None
