"""The operator's side of a job, written once for every cloud.

``backend`` is the port (what a cloud must do: send a batch, list and read records, see and
move dead letters); ``target`` finds where a job lives (flags, ``--stack``, ``--config``);
``manifest`` remembers what a submit sent; ``submit``, ``watch``, ``fetch``, ``redrive`` and
``status`` are the drivers; ``commands`` registers them as ``adder COMMAND CLOUD``. None of it
ships in a deployment zip, and none of it imports a cloud SDK.
"""

DEFAULT_FETCH_CONCURRENCY = 32
"""Downloads ``adder fetch`` keeps in flight by default (each small GET mostly waits: S3 documents
median latencies of tens of milliseconds for small objects). Here, not in ``fetch``, so the
command line can show it without importing the driver."""
