"""The DICOM node: receive (Store SCP), enhance (the one inference path), forward (Store SCU).

``python -m runtime.node``; docs/NODE.md. One module per job: ``config`` (settings),
``spool`` (the durable folders), ``journal`` (the write-ahead journal a C-STORE's Success
waits for), ``materializer`` (journal to incoming/), ``durable`` (flushes and writes),
``receiver`` (SCP, access control, back-pressure), ``worker`` (enhancement), ``forwarder``
(SCU, retries), ``httpd`` (/healthz, /metrics), ``metrics``, ``tls`` and ``service``
(starting and draining them together).
"""
