"""The Terraform test spends about three minutes mostly waiting on the AWS provider's own
pollers. In one process its work starts in the background as soon as it is selected and the
test itself runs last (see :func:`tests.deploy.test_terraform.start_in_background`); under
pytest-xdist it runs first, on one worker, while the others go on."""

from __future__ import annotations

import os

import pytest

SLOW = "test_terraform.py::test_terraform_applies_and_destroys_against_moto"


@pytest.hookimpl(trylast=True)  # after -k and -m have deselected what they deselect
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    slow = [item for item in items if item.nodeid.endswith(SLOW)]
    if not slow or config.option.collectonly:
        return
    for item in slow:
        items.remove(item)
    if "PYTEST_XDIST_WORKER" in os.environ:
        items[:0] = slow
        return
    items.extend(slow)
    from tests.deploy.test_terraform import start_in_background

    start_in_background()


def pytest_sessionfinish(session: pytest.Session) -> None:
    """A run stopped before the test (``-x``, Ctrl-C) leaves no terraform or moto running."""
    from tests.deploy.test_terraform import RUNNING

    for proc in list(RUNNING):
        proc.kill()
