"""Forwarding to the PACS: one association per series, retried with backoff, then failed/.

A folder of outgoing/ holds one series (the derived series of one source series, or its
unchanged originals). It is sent once it is complete for now: no instance of its source
series waits in incoming/ and nothing new arrived for ``settle_s`` seconds. All its
instances then go over one association, each deleted only after the destination answered
Success (or a warning). A file that the destination refuses, or that could not be sent
because the association failed, is tried again after a delay that doubles from
``retry_base_s`` up to ``retry_max_s``; after ``max_attempts`` tries it moves to failed/
with a one-line reason. Attempt counts are kept in the spool (``SPOOL/attempts.json``, written
after each series' attempt that changed them), so a restart goes on counting where the last run
stopped.
"""

from __future__ import annotations

import logging
import ssl
import threading
import time
from pathlib import Path

from pydicom.filereader import read_file_meta_info
from pynetdicom import AE, build_context

from runtime.logtext import cause, described
from runtime.node.config import NodeConfig
from runtime.node.metrics import Metrics
from runtime.node.spool import OUTGOING, Spool, is_payload
from runtime.node.worker import instance_key, token

LOG = logging.getLogger("medclear.node")
MAX_CONTEXTS = 128  # PS3.8: presentation contexts per association
SUCCESS_STATUSES = {0x0000, 0xB000, 0xB006, 0xB007, 0x0107, 0x0116}  # Success and the Warnings


class Forwarder(threading.Thread):
    """Sends ready series folders of outgoing/ to the destination."""

    def __init__(self, spool: Spool, config: NodeConfig, metrics: Metrics, received_at: dict[str, float],
                 tls: ssl.SSLContext | None = None) -> None:
        super().__init__(name="medclear-forwarder", daemon=True)
        self.spool, self.config, self.metrics = spool, config, metrics
        self.received_at = received_at
        self.tls = tls
        self.attempts: dict[Path, int] = {}  # read from the spool when the thread starts
        self._attempts_changed = False
        self.next_try: dict[Path, float] = {}
        self.stopping = threading.Event()
        self.wake = threading.Event()
        self.busy = False

    def stop(self) -> None:
        """Finish the instance in hand, release the association, return."""
        self.stopping.set()
        self.wake.set()

    def run(self) -> None:
        self.attempts = self.spool.read_attempts()
        while not self.stopping.is_set():
            sent = False
            for folder in self.spool.outgoing_series():
                if self.stopping.is_set():
                    break
                if self.ready(folder):
                    self.busy = True
                    try:
                        self.send(folder)
                    except Exception as error:  # e.g. the spool's disk failing: back off, keep going
                        LOG.error("unexpected error forwarding series#%s: %s; retrying later", folder.name[:10],
                                  described(error))
                        self.next_try[folder] = time.monotonic() + self.config.retry_max_s
                    finally:
                        self._save_attempts()
                        self.busy = False
                    sent = True
            if not sent:
                self.wake.wait(0.2)
                self.wake.clear()

    # --- choosing ---------------------------------------------------------------------------

    def ready(self, folder: Path) -> bool:
        """Whether a series folder is due: not backing off, its source series all enhanced,
        and quiet for ``settle_s``."""
        if time.monotonic() < self.next_try.get(folder, 0.0):
            return False
        if self.spool.has_pending(folder.name.split(".", 1)[0]):
            return False
        try:
            files = [path for path in folder.iterdir() if is_payload(path)]
            newest = max((path.stat().st_mtime for path in files), default=None)
        except FileNotFoundError:  # removed while we looked
            return False
        if newest is None:
            self.spool.prune(folder)
            return False
        return time.time() - newest >= self.config.settle_s

    # --- sending ----------------------------------------------------------------------------

    def send(self, folder: Path) -> None:
        files = sorted((path for path in folder.iterdir() if is_payload(path)), key=lambda p: p.name)
        metas = {}
        for path in files:
            try:
                meta = read_file_meta_info(path)
                metas[path] = (str(meta.MediaStorageSOPClassUID), str(meta.TransferSyntaxUID))
            except Exception as error:  # unreadable file meta: this file cannot be sent, ever
                self.give_up(path, f"unreadable file meta information ({described(error)})")
        files = [path for path in files if path in metas]
        if not files:
            return
        assoc, problem = self._associate(sorted(set(metas.values())))
        if assoc is None:
            for path in files:
                self.retry_later(path, problem)
            self._schedule(folder)
            return
        self.metrics.count("forward_associations")
        sent = 0
        try:
            for path in files:
                if self.stopping.is_set():
                    break
                if not assoc.is_established:
                    self.retry_later(path, "the association ended early (aborted by the destination or the network)")
                    continue
                if self._store(assoc, path):
                    sent += 1
        finally:
            if assoc.is_established:
                assoc.release()
        LOG.info("forwarded %d of %d instance(s) of series#%s to %s over one association", sent, len(files),
                 folder.name[:10], self.config.forward)
        self._schedule(folder)

    def _associate(self, pairs: list[tuple[str, str]]):
        """An established association for these (SOP class, transfer syntax) pairs, or (None, why)."""
        syntaxes: dict[str, list[str]] = {}
        for sop_class, syntax in pairs:
            syntaxes.setdefault(sop_class, []).append(syntax)
        contexts = [build_context(sop_class, found) for sop_class, found in syntaxes.items()][:MAX_CONTEXTS]
        ae = AE(ae_title=self.config.ae_title)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = self.config.timeout_s
        ae.connection_timeout = self.config.timeout_s
        destination = self.config.forward
        tls_args = (self.tls, destination.host) if self.tls is not None else None
        try:
            assoc = ae.associate(destination.host, destination.port, contexts=contexts,
                                 ae_title=destination.ae_title, tls_args=tls_args)
        except Exception as error:  # socket and TLS errors surface here in some versions
            return None, f"cannot associate with {destination}: {described(error)}"
        if assoc.is_established:
            return assoc, ""
        if assoc.is_rejected:
            return None, f"{destination} rejected the association (check its AE title and that it knows " \
                         f"{self.config.ae_title} at this host)"
        return None, f"cannot associate with {destination} (connection refused, timed out or aborted)"

    def _store(self, assoc, path: Path) -> bool:
        """C-STORE one file; True if the destination accepted it (the file is then removed)."""
        try:
            status = assoc.send_c_store(path)
        except ValueError as error:  # no accepted presentation context for its class/syntax
            self.retry_later(path, f"the destination accepts no presentation context for it ({cause(error)})")
            return False
        except Exception as error:  # unreadable file, network error mid-send
            self.retry_later(path, f"sending failed ({described(error)})")
            return False
        code = int(status.get("Status", -1)) if status else -1
        if code in SUCCESS_STATUSES:
            self.spool.remove(path)
            self._forget(path)
            self.metrics.count("forwarded")
            received = self.received_at.pop(instance_key(path), None)
            if received is not None:
                self.metrics.observe("image_seconds", time.monotonic() - received)
            return True
        self.retry_later(path, "no response (timeout or aborted)" if code < 0
                         else f"the destination answered status 0x{code:04X}")
        return False

    # --- retries ----------------------------------------------------------------------------

    def retry_later(self, path: Path, reason: str) -> None:
        attempts = self.attempts.get(path, 0) + 1
        if attempts >= self.config.max_attempts:
            self.give_up(path, f"forwarding failed after {attempts} attempt(s): {reason}")
            return
        self.attempts[path] = attempts
        self._attempts_changed = True
        self.metrics.count("forward_retries")
        LOG.warning("forwarding %s failed (attempt %d of %d): %s", token(path), attempts,
                    self.config.max_attempts, cause(reason))

    def give_up(self, path: Path, reason: str) -> None:
        self._forget(path)
        self.received_at.pop(instance_key(path), None)
        try:
            self.spool.fail(path, reason)
        except FileNotFoundError:
            return
        self.metrics.count("failed")
        LOG.error("gave up on %s: %s; it is in %s/failed/", token(path), cause(reason), self.spool.root)

    def _forget(self, path: Path) -> None:
        if self.attempts.pop(path, None) is not None:
            self._attempts_changed = True

    def _save_attempts(self) -> None:
        if self._attempts_changed:
            self._attempts_changed = False
            try:
                self.spool.write_attempts(self.attempts)
            except OSError as error:  # the counts stay in memory; the next change tries again
                self._attempts_changed = True
                LOG.error("cannot save forwarding attempt counts: %s", cause(error.strerror or error))

    def _schedule(self, folder: Path) -> None:
        """Back off a folder whose files failed: base * 2^(attempts-1), at most retry_max_s."""
        attempts = max((self.attempts.get(path, 0) for path in list(self.attempts) if path.parent == folder),
                       default=0)
        if attempts:
            delay = min(self.config.retry_max_s, self.config.retry_base_s * 2 ** (attempts - 1))
            self.next_try[folder] = time.monotonic() + delay
        else:
            self.next_try.pop(folder, None)
            if folder.parent.name == OUTGOING:
                self.spool.prune(folder)
