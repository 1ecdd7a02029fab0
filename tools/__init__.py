"""Developer tools that are not tests: loopback servers for tests and benchmarks
(``servers``), fault injection for SDKs (``aws_faults``, ``fault_proxy``) and the offline
Terraform schema check (``tfschema``).

Tests and benchmarks use them; nothing here ships in a deployment zip or the installed package.
"""
