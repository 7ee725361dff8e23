"""The node: receiver, worker, forwarder and status server around one spool, started and
stopped together.

Stopping (SIGTERM, SIGINT) drains: no new associations are accepted, associations in
progress may finish (at most ``drain_timeout_s``; an instance still unanswered then was
never acknowledged, so its sender still has it), the materializer moves everything
journaled into incoming/, the worker finishes the instance in hand, the forwarder the C-STORE
in hand (then releases its association). Everything else is durable in the spool and resumes
on the next start.
"""

from __future__ import annotations

import logging
import time

from runtime.node.config import NodeConfig
from runtime.node.forwarder import Forwarder
from runtime.node.httpd import StatusServer
from runtime.node.materializer import Materializer
from runtime.node.metrics import Metrics
from runtime.node.receiver import Receiver
from runtime.node.spool import FAILED, INCOMING, JOURNAL, OUTGOING, Spool
from runtime.node.tls import client_context, server_context
from runtime.node.worker import Worker

LOG = logging.getLogger("medclear.node")
RECEIPT_TIMES_LIMIT = 100_000  # receipt times kept for the latency histogram


class NodeError(RuntimeError):
    """The node cannot start (model, spool, port); one line."""


class Node:
    def __init__(self, config: NodeConfig) -> None:
        self.config = config
        self.spool = Spool(config.spool, config.spool_limit_bytes, config.min_free_bytes, config.journal_segment_bytes)
        self.metrics = Metrics(self._gauges)
        self.received_at: dict[str, float] = {}
        self.worker = Worker(self.spool, config, self.metrics, self.received_at)
        self.forwarder = Forwarder(self.spool, config, self.metrics, self.received_at, client_context(config))
        self.materializer = Materializer(self.spool, self._received) if config.journal else None
        self.receiver = Receiver(self.spool, config, self.metrics, self._received, server_context(config),
                                 self.materializer)
        self.worker.receiving = self.receiver.receiving
        self.status = None
        self.started = time.monotonic()

    def start(self) -> "Node":
        """Open the spool and the model, then receive, enhance and forward; NodeError if it cannot."""
        try:
            self.spool.open()
        except (OSError, RuntimeError) as error:
            raise NodeError(f"cannot use the spool {self.config.spool}: {error}") from None
        try:
            self._start_parts()
        except BaseException:
            self.stop()
            raise
        return self

    def _start_parts(self) -> None:
        config = self.config
        if config.retry_failed:
            LOG.info("--retry-failed: %d instance(s) moved back from failed/", self.spool.requeue_failed())
        self.worker.start()
        self.worker.ready.wait()
        if self.worker.error:
            raise NodeError(f"the model cannot be opened: {self.worker.error}")
        self.forwarder.start()
        if self.materializer is not None:
            self.materializer.start()
        try:
            self.receiver.start()
            if config.http:
                self.status = StatusServer(config.http, self.health, self.metrics.render)
                self.status.start()
        except OSError as error:
            raise NodeError(f"cannot listen: {error.strerror or error}") from None
        depth = self.spool.depth()
        LOG.info("listening as %s on %s:%d%s, forwarding to %s%s; spool %s: %d to enhance, %d to forward, "
                 "%d failed", config.ae_title, config.bind, self.receiver.port, " (TLS)" if self.receiver.tls else "",
                 config.forward, " (TLS)" if config.forward_tls else "", config.spool, depth[INCOMING],
                 depth[OUTGOING], depth[FAILED])
        if self.status is not None:
            LOG.info("health and metrics on http://%s:%d/healthz and /metrics", config.http[0], self.status.port)

    def stop(self) -> None:
        """Drain and stop (see the module's docstring); safe to call more than once."""
        aborted = 0
        if self.receiver.server is not None:
            self.receiver.stop_listening()
            aborted = self.receiver.drain(self.config.drain_timeout_s)
            self.receiver.server = None
        if self.materializer is not None and self.materializer.is_alive():  # what was journaled into incoming/
            self.materializer.stop()
            self.materializer.join(self.config.drain_timeout_s)
        for part in (self.worker, self.forwarder):
            part.stop()
        for part in (self.worker, self.forwarder):
            if part.is_alive():
                part.join(self.config.drain_timeout_s)
        if self.status is not None:
            self.status.stop()
            self.status = None
        depth = self.spool.depth()
        self.spool.close()
        LOG.info("stopped%s; %d to enhance and %d to forward stay in the spool for the next start",
                 f" ({aborted} association(s) aborted after the drain timeout)" if aborted else "",
                 depth[INCOMING], depth[OUTGOING])

    # --- the parts' hooks --------------------------------------------------------------

    def _received(self, path, key: str, acknowledged_at: float | None = None) -> None:
        if len(self.received_at) >= RECEIPT_TIMES_LIMIT:
            self.received_at.clear()
        self.received_at[key] = acknowledged_at or time.monotonic()
        self.worker.submit(path)
        self.forwarder.wake.set()

    def health(self) -> str | None:
        """None when healthy, else why not (for /healthz)."""
        if not self.worker.healthy:
            return f"the model is not running: {self.worker.error or 'worker stopped'}"
        if not self.forwarder.is_alive():
            return "the forwarder stopped"
        if self.materializer is not None and not self.materializer.is_alive():
            return "the journal's materializer stopped"
        if self.receiver.server is None:
            return "not receiving"
        return None

    def _gauges(self) -> dict[str, tuple[float, str]]:
        depth = self.spool.depth()
        return {
            "queue_depth": (depth[INCOMING], "received instances waiting to be enhanced"),
            "journal_depth": (depth[JOURNAL], "received instances journaled, not yet moved into incoming/"),
            "outgoing_depth": (depth[OUTGOING], "instances waiting to be forwarded"),
            "failed_depth": (depth[FAILED], "instances in failed/"),
            "spool_bytes": (self.spool.used_bytes, "bytes in incoming/, outgoing/ and the journal (the back-pressure "
                            "measure)"),
            "spool_limit_bytes": (self.spool.limit_bytes, "spool size at which C-STOREs get Out of Resources"),
            "up_seconds": (time.monotonic() - self.started, "seconds since the node started"),
        }
