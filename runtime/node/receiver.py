"""The Store SCP: C-ECHO, C-STORE into the spool, access control, TLS, back-pressure.

A C-STORE is answered Success only after the instance is durably in incoming/ (written,
fsynced, renamed, folder fsynced; ``Spool.receive``). While the spool is over its size limit
(or its disk nearly full) the answer is Out of Resources (0xA700) and nothing is written: the
sender keeps the instance and retries later. With ``--allow``, an association whose calling
AE title (and host) is not listed is rejected at association time (A-ASSOCIATE-RJ, "calling
AE title not recognised") and logged with the AE title and address only. Every storage SOP
class is accepted in every transfer syntax; what cannot be enhanced is decided later.
"""

from __future__ import annotations

import logging
import ssl
import threading
import time
from typing import Callable

from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, evt
from pynetdicom.sop_class import Verification

from runtime.logtext import cause, described, safe
from runtime.node.config import NodeConfig
from runtime.node.metrics import Metrics
from runtime.node.spool import Spool, digest

LOG = logging.getLogger("medclear.node")
OUT_OF_RESOURCES = 0xA700
CANNOT_UNDERSTAND = 0xC210
SUCCESS = 0x0000
REJECT_PERMANENT, SERVICE_USER, CALLING_AE_NOT_RECOGNISED = 0x01, 0x01, 0x03
MAX_PDU = 256 * 1024  # the largest P-DATA PDU callers may send (pynetdicom's default is 16 KiB)


class Receiver:
    """A pynetdicom Store SCP that spools what it receives and hands it to ``on_received``."""

    def __init__(self, spool: Spool, config: NodeConfig, metrics: Metrics,
                 on_received: Callable, tls: ssl.SSLContext | None = None) -> None:
        self.spool, self.config, self.metrics = spool, config, metrics
        self.on_received = on_received  # (path, sop key) -> None
        self.tls = tls
        self.ae = AE(ae_title=config.ae_title)
        self.ae.maximum_associations = config.max_associations
        self.ae.maximum_pdu_size = MAX_PDU  # fewer, larger PDUs: less per-PDU Python work per instance
        self.ae.acse_timeout = self.ae.dimse_timeout = self.ae.network_timeout = config.timeout_s
        for context in AllStoragePresentationContexts:
            self.ae.add_supported_context(context.abstract_syntax, ALL_TRANSFER_SYNTAXES)
        self.ae.add_supported_context(Verification)
        self.server = None
        self._refusing = threading.Event()  # log the first refusal of a spell, not every one

    @property
    def port(self) -> int:
        return self.server.server_address[1]

    def start(self) -> None:
        handlers = [(evt.EVT_REQUESTED, self._on_requested), (evt.EVT_C_STORE, self._on_store)]
        self.server = self.ae.start_server((self.config.bind, self.config.port), block=False,
                                           ssl_context=self.tls, evt_handlers=handlers)

    def stop_listening(self) -> None:
        """Accept no new associations; those in progress go on."""
        if self.server is not None:
            self.server.shutdown()

    def drain(self, timeout_s: float) -> int:
        """Wait for associations in progress to end (at most ``timeout_s``), abort the rest;
        how many were aborted (their unanswered instances were never acknowledged)."""
        deadline = time.monotonic() + timeout_s
        while self._active() and time.monotonic() < deadline:
            time.sleep(0.05)
        left = self._active()
        for assoc in left:
            assoc.abort()
        return len(left)

    def _active(self) -> list:
        return [assoc for assoc in self.ae.active_associations if assoc.is_acceptor and assoc.is_alive()]

    # --- handlers ------------------------------------------------------------------------

    def _on_requested(self, event) -> None:
        """Access control, before negotiation: reject callers that --allow does not list."""
        if not self.config.allow:
            return
        calling = str(event.assoc.requestor.primitive.calling_ae_title).strip()
        address = str(event.assoc.requestor.address)
        if any(rule.permits(calling, address) for rule in self.config.allow):
            return
        self.metrics.count("rejected_associations")
        LOG.warning("rejected association from calling AE %r at %s: not in --allow", safe(calling), safe(address))
        event.assoc.acse.send_reject(REJECT_PERMANENT, SERVICE_USER, CALLING_AE_NOT_RECOGNISED)
        event.assoc.kill()  # as pynetdicom's own rejection does: waits until the A-ASSOCIATE-RJ is out

    def _on_store(self, event) -> int:
        """Spool one instance; Success only once it is durable."""
        refusal = self.spool.refusal()
        if refusal:
            self.metrics.count("refused")
            if not self._refusing.is_set():
                self._refusing.set()
                LOG.warning("answering Out of Resources: %s", refusal)
            return OUT_OF_RESOURCES
        self._refusing.clear()
        sop_uid = str(event.request.AffectedSOPInstanceUID or "")
        try:
            series_uid = str(event.dataset.get("SeriesInstanceUID", "") or "")
        except Exception as error:  # undecodable data set
            self.metrics.count("refused")
            LOG.warning("refused an instance whose data set cannot be decoded: %s", described(error))
            return CANNOT_UNDERSTAND
        if not sop_uid:
            self.metrics.count("refused")
            return CANNOT_UNDERSTAND
        try:
            path = self.spool.receive(series_uid, sop_uid, event.encoded_dataset())
        except OSError as error:  # disk full, permissions: the sender keeps it and retries
            self.metrics.count("refused")
            LOG.error("cannot spool a received instance: %s; answering Out of Resources",
                      cause(error.strerror or error))
            return OUT_OF_RESOURCES
        self.metrics.count("received")
        self.on_received(path, digest(sop_uid))
        return SUCCESS
