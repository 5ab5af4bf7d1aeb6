"""kopf's per-handler success lines stay out of the log unless the log level is DEBUG."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from skyfleet.logs import RoutineSuccessFilter, install_object_refs

pytestmark = pytest.mark.unit

REF = {"apiVersion": "skyfleet.io/v1alpha1", "kind": "Instance", "name": "shop-web-0", "namespace": "shop"}


@pytest.fixture
def objects_logger() -> Iterator[logging.Logger]:
    logger = logging.getLogger("kopf.objects")
    level = logger.level
    yield logger
    logger.setLevel(level)
    logger.filters[:] = [f for f in logger.filters if not isinstance(f, RoutineSuccessFilter)]


def lines(caplog: pytest.LogCaptureFixture) -> list[tuple[str, str]]:
    return [(r.levelname, r.getMessage()) for r in caplog.records if r.name == "kopf.objects"]


def say_everything(logger: logging.Logger) -> None:
    log = logging.LoggerAdapter(logger, {"k8s_ref": REF})
    log.info("Handler 'provision' succeeded.")
    log.info("Creation is processed: 1 succeeded; 0 failed.")
    log.info("Creation is processed: 1 succeeded; 1 failed.")
    log.info("Handler 'provision' succeeded. Or so it says")
    log.error("Handler 'provision' failed temporarily: CapacityUnavailable")
    log.warning("Handler 'provision' succeeded.")  # not kopf's wording at that level: kept


def test_routine_success_lines_are_left_out_at_info(
    objects_logger: logging.Logger, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    objects_logger.setLevel(logging.INFO)
    install_object_refs()
    install_object_refs()  # twice, as a restarted run in one process does: one filter
    assert sum(isinstance(f, RoutineSuccessFilter) for f in objects_logger.filters) == 1
    say_everything(objects_logger)
    assert lines(caplog) == [
        ("INFO", "Creation is processed: 1 succeeded; 1 failed."),
        ("INFO", "Handler 'provision' succeeded. Or so it says"),
        ("ERROR", "Handler 'provision' failed temporarily: CapacityUnavailable"),
        ("WARNING", "Handler 'provision' succeeded."),
    ]


def test_at_debug_every_line_is_kept(objects_logger: logging.Logger, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    objects_logger.setLevel(logging.DEBUG)
    install_object_refs()
    say_everything(objects_logger)
    assert len(lines(caplog)) == 6
