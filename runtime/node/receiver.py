"""The Store SCP: C-ECHO, C-STORE into the spool, access control, TLS, back-pressure.

A C-STORE is answered Success only after the instance is durable: a record in the spool's
write-ahead journal (``Materializer.append``: one fdatasync; moved into incoming/ later), or
without a journal in incoming/ itself (written, fsynced, renamed, folder fsynced;
``Spool.receive``). The data set is stored as it came, behind
File Meta Information encoded here (no decoding and re-encoding through pydicom, no copy of the
data set); only the elements up to the Series Instance UID are decoded, to name its folder.
While the spool is over its size limit (or its disk nearly full) the answer is Out of Resources
(0xA700) and nothing is written: the sender keeps the instance and retries later. With
``--allow``, an association whose calling AE title (and host) is not listed is rejected at
association time (A-ASSOCIATE-RJ, "calling AE title not recognised") and logged with the AE
title and address only. Every storage SOP class is accepted in every transfer syntax; what
cannot be enhanced is decided later.
"""

from __future__ import annotations

import logging
import ssl
import struct
import threading
import time
from typing import Callable

from pydicom.filereader import read_dataset
from pydicom.tag import Tag
from pydicom.uid import UID
from pynetdicom import (
    AE, ALL_TRANSFER_SYNTAXES, PYNETDICOM_IMPLEMENTATION_UID, PYNETDICOM_IMPLEMENTATION_VERSION,
    AllStoragePresentationContexts, evt,
)
from pynetdicom.sop_class import Verification

from runtime.logtext import cause, described, safe
from runtime.node.config import NodeConfig
from runtime.node.materializer import Materializer
from runtime.node.metrics import Metrics
from runtime.node.spool import Spool, digest

LOG = logging.getLogger("medclear.node")
OUT_OF_RESOURCES = 0xA700
CANNOT_UNDERSTAND = 0xC210
SUCCESS = 0x0000
REJECT_PERMANENT, SERVICE_USER, CALLING_AE_NOT_RECOGNISED = 0x01, 0x01, 0x03
MAX_PDU = 256 * 1024  # the largest P-DATA PDU callers may send (pynetdicom's default is 16 KiB)
SERIES_UID = Tag(0x0020, 0x000E)
PREAMBLE = b"\0" * 128 + b"DICM"


def file_meta(sop_class: str, sop_instance: str, syntax: str, source_ae: str) -> bytes:
    """The preamble and File Meta Information (PS3.10 7.1) for a data set received as it is."""
    values = ((0x0002, b"UI", sop_class), (0x0003, b"UI", sop_instance), (0x0010, b"UI", syntax),
              (0x0012, b"UI", PYNETDICOM_IMPLEMENTATION_UID), (0x0013, b"SH", PYNETDICOM_IMPLEMENTATION_VERSION),
              (0x0016, b"AE", source_ae))
    body = _element(0x0001, b"OB", b"\0\1")
    body += b"".join(_element(number, vr, text.encode("ascii", "replace")) for number, vr, text in values)
    return PREAMBLE + _element(0x0000, b"UL", struct.pack("<I", len(body))) + body


def _element(number: int, vr: bytes, value: bytes) -> bytes:
    """One group-0002 element, Explicit VR Little Endian, padded to an even length."""
    if len(value) % 2:
        value += b"\0" if vr == b"UI" else b" "
    if vr == b"OB":
        return struct.pack("<HH2s2xI", 2, number, vr, len(value)) + value
    return struct.pack("<HH2sH", 2, number, vr, len(value)) + value


def series_uid(event) -> str:
    """The Series Instance UID of a C-STORE's data set, decoding only the elements before it."""
    syntax = UID(event.context.transfer_syntax)
    if syntax.is_deflated:
        return str(event.dataset.get("SeriesInstanceUID", "") or "")
    stream = event.request.DataSet
    stream.seek(0)
    ds = read_dataset(stream, syntax.is_implicit_VR, syntax.is_little_endian,
                      stop_when=lambda tag, vr, length: tag > SERIES_UID)
    return str(ds.get("SeriesInstanceUID", "") or "")


class Receiver:
    """A pynetdicom Store SCP that spools what it receives: through ``materializer`` (the
    journal; it hands each instance on once in incoming/), or, without one, into incoming/
    directly, handing it to ``on_received`` at once."""

    def __init__(self, spool: Spool, config: NodeConfig, metrics: Metrics, on_received: Callable,
                 tls: ssl.SSLContext | None = None, materializer: Materializer | None = None) -> None:
        self.spool, self.config, self.metrics = spool, config, metrics
        self.on_received = on_received  # (path, sop key) -> None
        self.materializer = materializer
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

    def receiving(self) -> bool:
        """Whether an incoming association is open."""
        return bool(self._active())

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
        request = event.request
        sop_uid = str(request.AffectedSOPInstanceUID or "")
        try:
            series = series_uid(event)
        except Exception as error:  # undecodable data set
            self.metrics.count("refused")
            LOG.warning("refused an instance whose data set cannot be decoded: %s", described(error))
            return CANNOT_UNDERSTAND
        if not sop_uid:
            self.metrics.count("refused")
            return CANNOT_UNDERSTAND
        meta = file_meta(str(request.AffectedSOPClassUID or ""), sop_uid, str(event.context.transfer_syntax),
                         str(event.assoc.requestor.ae_title).strip())
        try:
            with request.DataSet.getbuffer() as data:
                if self.materializer is not None:
                    self.materializer.append(series, sop_uid, meta, data)
                    path = None  # handed on by the materializer once in incoming/
                else:
                    path = self.spool.receive(series, sop_uid, meta, data)
        except OSError as error:  # disk full, permissions: the sender keeps it and retries
            self.metrics.count("refused")
            LOG.error("cannot spool a received instance: %s; answering Out of Resources",
                      cause(error.strerror or error))
            return OUT_OF_RESOURCES
        self.metrics.count("received")
        if path is not None:
            self.on_received(path, digest(sop_uid))
        return SUCCESS
