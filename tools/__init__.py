"""Developer tools that are not tests: the offline Terraform schema check and the fault proxy.

Tests and benchmarks use them; nothing here ships in a deployment zip or the installed package.
"""
