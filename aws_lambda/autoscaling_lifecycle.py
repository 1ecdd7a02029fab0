"""EC2 Auto Scaling for ``adder work``: once the worker has drained after an Auto Scaling
termination notice (``autoscaling/target-lifecycle-state`` = ``Terminated``), complete the
group's termination lifecycle action, so the instance goes at once instead of waiting out the
hook's heartbeat timeout (3600 s by default).

The call: ``CompleteLifecycleAction`` with ``LifecycleActionResult=CONTINUE`` for this
instance (its id from IMDSv2 ``instance-id``, read through the notice poller and its session
token). The hook and group come from the cloud config's ``config.lifecycle_hook`` and
``config.autoscaling_group``; without the group, from the instance tag
``aws:autoscaling:groupName`` (IMDS, when instance metadata tags are on). IAM:
``autoscaling:CompleteLifecycleAction`` on the group (infra/aws ``worker_autoscaling_groups``).
What cannot be done (no hook configured, access denied, no such hook) raises one line, which
the worker logs: the drain itself succeeded and the hook's timeout still releases the
instance. Sources:
https://docs.aws.amazon.com/autoscaling/ec2/userguide/completing-lifecycle-hooks.html,
https://docs.aws.amazon.com/autoscaling/ec2/APIReference/API_CompleteLifecycleAction.html.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from aws_lambda.job_errors import aws_error
from core.errors import ConfigError
from core.ops.problems import Resource, one_line
from core.worker.notices import MetadataError

if TYPE_CHECKING:
    from core.worker.command import WorkerConfig
    from core.worker.notices import Ec2NoticePoller, Notice

HOOK_SETTING = "lifecycle_hook"
"""``config.lifecycle_hook``: the name of the group's termination lifecycle hook."""
GROUP_SETTING = "autoscaling_group"
"""``config.autoscaling_group``: the Auto Scaling group's name (default: the instance tag)."""
GROUP_TAG = "aws:autoscaling:groupName"
"""The tag Auto Scaling puts on its instances, readable in IMDS with instance metadata tags."""
ATTEMPTS = 3
CONNECT_TIMEOUT_SECONDS = 3
READ_TIMEOUT_SECONDS = 10
WAITS = "this instance stays in Terminating:Wait until the hook's heartbeat timeout"


class AutoScalingApi(Protocol):
    """The one call of boto3's ``autoscaling`` client used here."""

    def complete_lifecycle_action(
        self,
        *,
        LifecycleHookName: str,
        AutoScalingGroupName: str,
        LifecycleActionResult: str,
        InstanceId: str,
    ) -> Any:
        """CompleteLifecycleAction."""


@dataclass
class LifecycleCompleter:
    """Completes this instance's termination lifecycle action (:meth:`complete`)."""

    metadata: Ec2NoticePoller
    """IMDSv2 reads (``instance-id``, the group tag) with the notice poller's token."""
    hook: str | None
    group: str | None
    where: str
    """The config file, for messages."""
    region: str | None = None
    endpoint_url: str | None = None
    client: AutoScalingApi | None = None
    """Made at the first call when not given."""

    @classmethod
    def from_config(cls, config: WorkerConfig, metadata: Ec2NoticePoller) -> LifecycleCompleter:
        """The completer of ``config``'s hook and group (``config.region``,
        ``config.endpoint_url`` as for the queue)."""
        settings = config.settings
        return cls(
            metadata,
            hook=str(settings.get(HOOK_SETTING) or "").strip() or None,
            group=str(settings.get(GROUP_SETTING) or "").strip() or None,
            where=str(config.path),
            region=str(settings.get("region") or os.environ.get("AWS_REGION") or "") or None,
            endpoint_url=str(settings.get("endpoint_url") or "") or None,
        )

    def complete(self, notice: Notice) -> None:
        """``CompleteLifecycleAction`` (CONTINUE) for this instance; raise one line
        (ConfigError, CloudUnavailableError) when it cannot be made or fails."""
        group = self.group or self._group_from_tags()
        if not self.hook or not group:
            unset: dict[str, str] = {}
            if not self.hook:
                unset[f"config.{HOOK_SETTING}"] = "the group's termination hook"
            if not group:
                unset[f"config.{GROUP_SETTING}"] = (
                    "the group's name (or turn on instance metadata tags)"
                )
            raise ConfigError(
                f"cannot complete the Auto Scaling lifecycle action: no {' and no '.join(unset)}"
                f" in {self.where}, so {WAITS}; set "
                + " and ".join(f"{name} to {what}" for name, what in unset.items())
            )
        instance_id = self._instance_id()
        what = f"Auto Scaling lifecycle hook {self.hook} of group {group} (instance {instance_id})"
        try:
            client = self.client or self._make_client()
            self.client = client
            client.complete_lifecycle_action(
                LifecycleHookName=self.hook,
                AutoScalingGroupName=group,
                LifecycleActionResult="CONTINUE",
                InstanceId=instance_id,
            )
        except (BotoCoreError, ClientError) as exc:
            resource = Resource(
                what + (f" in region {self.region}" if self.region else ""),
                f"check config.{HOOK_SETTING} and config.{GROUP_SETTING} in {self.where}",
                "autoscaling:CompleteLifecycleAction on the group",
            )
            error = aws_error(exc, resource, reached=True)
            raise type(error)(f"{error}; {WAITS}") from exc

    def _instance_id(self) -> str:
        try:
            instance_id = self.metadata.instance_metadata("instance-id")
        except (OSError, MetadataError) as exc:
            raise ConfigError(
                f"cannot read this instance's id from {self.metadata.base_url}: {one_line(exc)};"
                f" {WAITS}"
            ) from exc
        if not instance_id:
            raise ConfigError(f"the instance metadata service has no instance-id; {WAITS}")
        return instance_id

    def _group_from_tags(self) -> str | None:
        """The ``aws:autoscaling:groupName`` tag; None when IMDS does not show tags."""
        try:
            return self.metadata.instance_metadata(f"tags/instance/{GROUP_TAG}") or None
        except (OSError, MetadataError):
            return None

    def _make_client(self) -> AutoScalingApi:
        session = boto3.session.Session(region_name=self.region)
        config = Config(
            retries={"mode": "standard", "total_max_attempts": ATTEMPTS},
            connect_timeout=CONNECT_TIMEOUT_SECONDS,
            read_timeout=READ_TIMEOUT_SECONDS,
        )
        client: AutoScalingApi = session.client(
            "autoscaling", config=config, endpoint_url=self.endpoint_url
        )
        return client
