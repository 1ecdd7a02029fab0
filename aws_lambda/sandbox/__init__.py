"""``adder sandbox aws``: the AWS stack on this machine, and the tools it is made of.

- :mod:`~aws_lambda.sandbox.moto_server`: the project's patched moto server;
- :mod:`~aws_lambda.sandbox.terraform`: drives terraform against a copy of ``infra/aws``;
- :mod:`~aws_lambda.sandbox.runtime`: the deployment zip's handler in its own interpreter;
- :mod:`~aws_lambda.sandbox.esm`: the SQS event source mapping's poll-invoke-delete loop;
- :mod:`~aws_lambda.sandbox.command`: the command that puts them together.

Operator code: none of it is in the deployment zip, and importing this package imports
neither boto3 nor moto.
"""
