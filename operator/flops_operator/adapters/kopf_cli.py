"""`flops operator`: run the kopf handlers in-process against a Kubernetes API server."""

from __future__ import annotations

import asyncio
import os
from contextlib import AsyncExitStack
from dataclasses import replace
from enum import Enum
from typing import Any, List, Mapping, Optional, Sequence

import kopf
import kubernetes.client
import kubernetes.config
import typer
import yaml

from .. import __version__
from ..pacing import Pacing
from ..platforms.base import Platform, PlatformError
from ..platforms.fake import FakePlatform
from ..control import NoControl, TrainingControl
from ..progress import NoProgress, ProgressSource
from .kopf_context import OperatorContext, PlatformFactory, PlatformSet
from .kopf_handlers import register as register_handlers
from .kopf_metrics import Metrics, serve_metrics
from .kopf_secrets import SecretCredentials
from .kopf_settings import operator_settings, quiet_ticks
from .leader import LeaderElector, elector_for, run_as_leader
from .lease import LeaseError

SPEC_PLATFORMS = ("local", "oakestra")
USER_AGENT = f"flops-operator/{__version__}"
# The longest the resync timer waits between ticks (tick_seconds: shorter when the pacing looks more often).
TICK_SECONDS = 1.0


def tick_seconds(pacing: Pacing) -> float:
    """The resync timer's tick. The timer only ticks (cheap: a due check); the pacing decides. kopf sleeps a
    timer's interval from the end of each call, so looks made by ticks are at least a tick apart: a tick no longer
    than the quickest look keeps them on the pacing's time (a look due sooner than the next tick is awaited by
    the tick before it, OperatorContext.lookahead)."""
    return min(TICK_SECONDS, pacing.quick)


class PlatformChoice(str, Enum):
    local = "local"
    oakestra = "oakestra"
    fake = "fake"


def _local() -> Platform:
    from ..platforms.local import LocalPlatform

    return LocalPlatform()


def _oakestra() -> Platform:
    # Imported by name only when served: the driver and its dependencies stay out of other runs.
    from ..platforms.oakestra import OakestraPlatform

    return OakestraPlatform.from_env(os.environ)


def platform_factories(choices: list[str]) -> dict[str, PlatformFactory]:
    """spec.platform name -> factory. `fake` (an in-memory dry run) stands in for every platform
    not served for real, so an operator started with only `--platform fake` accepts any project."""
    real = {"local": _local, "oakestra": _oakestra}
    factories = {name: real[name] for name in choices if name in real}
    if "fake" in choices:
        fake = FakePlatform()
        factories.update({name: (lambda: fake) for name in SPEC_PLATFORMS if name not in factories})
    return factories


def progress_source(choices: list[str]) -> ProgressSource:
    if set(choices) <= {"fake"}:
        return NoProgress()
    from ..progress_mlflow import MlflowProgress

    return MlflowProgress()


def training_control(choices: list[str]) -> TrainingControl:
    if set(choices) <= {"fake"}:
        return NoControl()
    from ..control_mlflow import MlflowControl

    return MlflowControl()


def kube_config() -> kubernetes.client.Configuration:
    """In a pod: its service account; elsewhere: the kubeconfig (KUBECONFIG or ~/.kube/config)."""
    config = kubernetes.client.Configuration()
    try:
        kubernetes.config.load_incluster_config(client_configuration=config)
    except kubernetes.config.ConfigException:
        kubernetes.config.load_kube_config(client_configuration=config)
    return config


async def run_operator(
    ctx: OperatorContext,
    *,
    namespaces: Sequence[str] = (),
    clusterwide: bool = False,
    liveness: str | None = None,
    metrics_host: str = "0.0.0.0",
    metrics_port: int | None = None,
    resync_seconds: float = 30.0,
    training_poll_seconds: float = 3.0,
    stop_flag: Any = None,
    ready_flag: Any = None,
    elector: LeaderElector | None = None,
) -> None:
    """kopf with our handlers, settings and memo, plus the metrics endpoint, until stop_flag is set.

    The bound metrics port is put in `ctx.metrics_port` (useful with port 0). With an `elector`, kopf runs
    only while this process holds the Lease (one active replica of several: leader.py).
    """
    ctx.pacing = replace(ctx.pacing, resync=resync_seconds, training=training_poll_seconds)
    quiet_ticks()
    tick = tick_seconds(ctx.pacing)
    ctx.lookahead = float("inf")  # each tick sleeps until its project is due (no idle ticks)
    registry = register_handlers(kopf.OperatorRegistry(), tick_seconds=tick)
    async with AsyncExitStack() as stack:
        stack.push_async_callback(ctx.platforms.close)
        for resource in (ctx.progress, ctx.control, ctx.credentials):
            closer = getattr(resource, "close", None)  # optional in their protocols
            if closer is not None:
                stack.push_async_callback(closer)
        if metrics_port is not None:
            runner, ctx.metrics_port = await serve_metrics(ctx.metrics, metrics_host, metrics_port)
            stack.push_async_callback(runner.cleanup)
        def serve() -> Any:
            return kopf.operator(
                registry=registry, settings=operator_settings(), memo=kopf.Memo(flops=ctx),
                clusterwide=clusterwide, namespaces=list(namespaces), liveness_endpoint=liveness,
                standalone=True, stop_flag=stop_flag, ready_flag=ready_flag,
            )
        if elector is None:
            await serve()
        else:
            await run_as_leader(elector, serve, stop_flag=stop_flag, liveness=liveness)


def build_context(choices: list[str], config: kubernetes.client.Configuration,
                  factories: Mapping[str, PlatformFactory] | None = None,
                  progress: ProgressSource | None = None, control: TrainingControl | None = None) -> OperatorContext:
    metrics = Metrics()
    api_client = kubernetes.client.ApiClient(config)
    api_client.user_agent = USER_AGENT  # tells the operator's own calls apart in API server audit logs
    return OperatorContext(
        platforms=PlatformSet(factories if factories is not None else platform_factories(choices), metrics),
        credentials=SecretCredentials(api_client),
        progress=progress if progress is not None else progress_source(choices),
        control=control if control is not None else training_control(choices),
        metrics=metrics,
        kube_config=config,
    )


def operator(
    platform: List[PlatformChoice] = typer.Option(
        [PlatformChoice.oakestra], "--platform", "-p",
        help="Platform(s) served; a project asking for another is Stalled. 'fake' is an in-memory dry run."),
    namespace: List[str] = typer.Option([], "--namespace", "-n", help="Namespace(s) to serve (globs allowed)."),
    all_namespaces: bool = typer.Option(False, "--all-namespaces", "-A", help="Serve the whole cluster."),
    liveness: Optional[str] = typer.Option(
        "http://0.0.0.0:8080/healthz", "--liveness", help="kopf's liveness endpoint URL ('' to disable)."),
    metrics_port: int = typer.Option(9090, "--metrics-port", help="Prometheus /metrics port (0 to disable)."),
    resync_seconds: float = typer.Option(
        30.0, "--resync-seconds", min=1, help="Resync interval of a settled project (a waiting one is looked at "
                                              "again within seconds)."),
    training_poll_seconds: float = typer.Option(
        3.0, "--training-poll-seconds", min=0.5, help="How often a training project's progress is read."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="kopf's debug logging (every event and API call)."),
    leader_election: bool = typer.Option(
        True, "--leader-election/--no-leader-election",
        help="Serve only while holding a Lease, so that replicas take over from each other with one active "
             "(--no-leader-election: no Lease, for exactly one instance)."),
    lease_namespace: Optional[str] = typer.Option(
        None, "--lease-namespace", help="Namespace of the Lease (default: the pod's own, else 'default')."),
    lease_name: str = typer.Option(
        "flops-operator", "--lease-name", help="The Lease's name: operators sharing it have one active among them."),
) -> None:
    """Run the FLOpsProject operator (kopf) against the current cluster."""
    if bool(namespace) == all_namespaces:
        raise typer.BadParameter("give -n NAMESPACE (one or more) or -A, not both and not neither")
    kopf.configure(verbose=verbose)
    choices = [p.value for p in platform]
    try:
        config = kube_config()
    except (kubernetes.config.ConfigException, yaml.YAMLError) as exc:
        # The usual first mistake (no cluster configured here): one line saying where it looked, no traceback.
        typer.echo(f"flops operator: no Kubernetes cluster to serve: not in a pod (no service account) and no usable "
                   f"kubeconfig (KUBECONFIG or ~/.kube/config): {' '.join(str(exc).split())}", err=True)
        raise typer.Exit(1) from None
    ctx = build_context(choices, config)
    elector = elector_for(config, lease_namespace, lease_name, USER_AGENT) if leader_election else None
    try:
        asyncio.run(run_operator(
            ctx, namespaces=namespace, clusterwide=all_namespaces, liveness=liveness or None,
            metrics_port=metrics_port or None, resync_seconds=resync_seconds,
            training_poll_seconds=training_poll_seconds, elector=elector))
    except LeaseError as exc:
        typer.echo(f"flops operator: {exc}; grant get/create/patch on leases there, or run one instance with "
                   f"--no-leader-election", err=True)
        raise typer.Exit(1) from None
    except PlatformError as exc:
        # The handlers turn platform failures into status; one that still ends the operator is
        # said in a line, not as a traceback.
        typer.echo(f"flops operator stopped: {exc} ({type(exc).__name__})", err=True)
        raise typer.Exit(1) from None


def register(app: typer.Typer) -> None:
    app.command("operator")(operator)
