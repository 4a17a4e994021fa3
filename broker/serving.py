"""`szb serve`: one broker process for its role, until SIGINT or SIGTERM."""

from __future__ import annotations

import asyncio
import gc
import signal
from pathlib import Path

from broker.app import BrokerApp
from broker.config import BrokerConfig
from broker.logs import say


async def serve_forever(config: BrokerConfig, config_file: Path | None = None) -> None:
    """Run until SIGINT/SIGTERM; SIGHUP reloads the policy and the tokens file (`BrokerApp.reload`)."""
    app = BrokerApp(config, config_file=config_file)
    port = await app.start()
    # All loaded so far lives as long as the process: frozen, collections stay short under load.
    gc.collect()
    gc.freeze()
    loop = asyncio.get_running_loop()
    done = asyncio.Event()
    for stop in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(stop, done.set)
    loop.add_signal_handler(signal.SIGHUP, app.reload)
    # Ready only once the handlers are in: an early SIGHUP must reload, not kill the broker.
    if app.metrics_server is not None:
        say(f"metrics on {app.metrics_server.url}", event="serving")
    say(f"{'scheduler' if config.role == 'scheduler' else 'broker'} serving on port {port}", event="serving")
    waits = [asyncio.ensure_future(done.wait()), asyncio.ensure_future(app.halted.wait())]
    await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    for wait in waits:
        wait.cancel()
    await app.stop()
    if app.halted.is_set():
        raise RuntimeError(app.halt_reason)
