"""The cloud-native worker: the fourth way to run the same core, on a VM or in a container.

``adder work --config cloud-config.json`` pulls tasks from the config's queue, runs each through
:func:`core.delivery.deliver` with the cloud's own results store (the functions' adapters), and
leaves cleanly on a termination notice or SIGTERM. Standard library only: each cloud plugs in
one :class:`~core.worker.port.Receiver` (:mod:`core.worker.command` names them).

- :mod:`core.worker.port`: the receiver port (receive, extend, acknowledge, release);
- :mod:`core.worker.loop`: the loop (bounded concurrency, leases, batched settling, draining);
- :mod:`core.worker.notices`: the termination notices of AWS, GCP and Azure;
- :mod:`core.worker.logs`: one JSON line per task, the job's id in every line;
- :mod:`core.worker.command`: the ``adder work`` command.
"""
