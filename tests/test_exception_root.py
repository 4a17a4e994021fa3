"""One exception root on the broker side (issue 13): every exception class defined in broker/
and adapters/ derives from `broker.errors.BrokerError`, so a boundary can tell the broker's own
errors from bugs; callers keep catching the specific classes (value errors stay ValueErrors)."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import adapters
import broker
from adapters.base import AdapterError
from broker.errors import BrokerError
from broker.serde import WireValueError


def defined_exceptions() -> list[type[BaseException]]:
    found: list[type[BaseException]] = []
    for package in (broker, adapters):
        for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
            if info.name.startswith("broker.api"):
                continue
            module = importlib.import_module(info.name)
            for _, cls in inspect.getmembers(module, inspect.isclass):
                if cls.__module__ == info.name and issubclass(cls, BaseException):
                    found.append(cls)
    return found


def test_every_broker_exception_derives_from_broker_error() -> None:
    classes = defined_exceptions()
    assert len(classes) > 20, [c.__qualname__ for c in classes]  # the walk did find them
    stray = [f"{c.__module__}.{c.__qualname__}" for c in classes if not issubclass(c, BrokerError)]
    assert not stray, f"not under BrokerError: {stray}"


def test_callers_keep_catching_what_they_caught() -> None:
    assert issubclass(AdapterError, BrokerError)
    assert issubclass(WireValueError, ValueError)  # pydantic and argument parsing still see one
