"""kopf handlers: one daemon per unfinished Repo2DockerBuild, plus start-up and clean-up.

Why a daemon rather than an on-create handler: a build runs for minutes. A handler would hold
one of kopf's workers for that long and could only publish status when it returned; a daemon
is a task of its own, writes status while it runs (through ``resources.BuildResources``), and
kopf spawns it again for every unfinished resource when the operator restarts, which is
exactly when a running build must be re-attached. Finished resources get no daemon: their
TTL is one heap entry in ``expiry.Expiries``. The global cap lives in ``BuildQueue``; what
the operator holds while it runs is ``state.OperatorState``, in kopf's memo.

Run with ``repo2docker-operator`` (see ``cli.py``) or ``kopf run -m repo2docker_operator.handlers``
(configuration then comes from the environment only).
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import kopf

from repo2docker_buildcore import contract, gitcredentials
from repo2docker_buildcore.adoption import adopt
from repo2docker_buildcore.backoff import Backoff, retry
from repo2docker_buildcore.build import BuildJob, BuildOutcome, ClaimLost, no_build_needed
from repo2docker_buildcore.contract import BuildSpec, BuildStatus, InvalidBuildRequest, Phase
from repo2docker_buildcore.docker_api import RunnerError
from repo2docker_buildcore.gitcredentials import CloneCredentials, GitCredential, load_file, match
from repo2docker_buildcore.resources import UNFINISHED_SELECTOR, OutdatedCRD, worth_asking_again
from repo2docker_buildcore.runner import BuildContainer, BuildRef
from repo2docker_buildcore.status import StatusPublisher, now_iso
from repo2docker_buildcore.versions import UnsupportedSetting, check_supported

from . import claims
from .config import ConfigError, OperatorConfig, from_environ
from .state import OperatorState

FINALIZER = f"{contract.GROUP}/finalizer"
T = TypeVar("T")
EVENT_REASONS = {
    Phase.QUEUED: ("Normal", "Queued"),
    Phase.BUILDING: ("Normal", "Building"),
    Phase.SUCCEEDED: ("Normal", "Succeeded"),
    Phase.FAILED: ("Warning", "Failed"),
    Phase.CANCELLED: ("Normal", "Cancelled"),
}


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, logger: logging.Logger, **_: Any) -> None:
    config = _config(memo)
    configure(settings, config)
    try:
        state = memo.state = await OperatorState.start(config)
    except OutdatedCRD as exc:
        raise kopf.PermanentError(str(exc)) from None
    logger.info(
        "Image GC (every %s s): %s", config.gc_interval, config.gc_policy().describe() if config.gc_interval else "off"
    )
    try:
        await state.runner.ping()
        await _adopt_running_builds(state)
    except RunnerError as exc:
        logger.error("Docker is not reachable now (%s); builds will fail until it is", exc)
        return
    await _check_build_image(state, logger)
    where = "all namespaces" if config.all_namespaces else "namespace(s) " + ", ".join(config.namespaces)
    logger.info(
        "Watching %s in %s: at most %s builds at once with %s, as builder %s",
        contract.PLURAL,
        where,
        config.concurrency or "unlimited",
        config.build_image,
        config.builder,
    )


def _config(memo: kopf.Memo) -> OperatorConfig:
    """From the CLI (in memo), or from the environment under `kopf run`, where a bad value
    must stop the operator with its message rather than be retried forever."""
    try:
        return memo.get("config") or from_environ()
    except ConfigError as exc:
        raise kopf.PermanentError(f"invalid configuration: {exc}") from None


class _QuietEvents(logging.Filter):
    """Drops kopf's "Handler 'build_event' succeeded." (one line per watch event, thousands in
    a burst, and saying nothing); its failures still show."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() != f"Handler {build_event.__name__!r} succeeded."


_QUIET_EVENTS = _QuietEvents()


def configure(settings: kopf.OperatorSettings, config: OperatorConfig) -> None:
    logging.getLogger("kopf.objects").addFilter(_QUIET_EVENTS)
    # kopf's bookkeeping goes into annotations under our group, so `status` is ours alone.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=contract.GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=contract.GROUP, key="last-handled-configuration"
    )
    settings.persistence.finalizer = FINALIZER
    # Released resources (status.finishedAt set) drop out of the watch on the server side:
    # thousands of them cost the operator nothing, at start-up or after. A status field, not a
    # label: whoever creates a resource may label it, and must not hide it from the operator.
    settings.watching.field_selectors[contract.GROUP, contract.PLURAL] = UNFINISHED_SELECTOR
    settings.watching.chunk_size = 500
    settings.posting.level = logging.WARNING  # our own events say what happened; keep kopf's chatter out
    settings.watching.server_timeout = 300
    # Cancelling a build (kill + remove its container, record Cancelled) takes a second or
    # two. Without this kopf re-checks an exiting daemon only after cancellation_backoff,
    # and the deleted resource would linger that long behind its finalizer.
    settings.background.instant_exit_timeout = 10
    settings.networking.error_backoffs = [1, 2, 5, 10]
    # With named namespaces (the chart's default, a namespaced Role) there is nothing to
    # discover at run time; scanning would try cluster-wide lists of namespaces and CRDs that
    # the Role rightly refuses, and log five retries of each at every start.
    settings.scanning.disabled = not config.all_namespaces


async def _check_build_image(state: OperatorState, logger: logging.Logger) -> None:
    """Read the default build image's repo2docker version now, before any build asks (a
    burst of first builds would otherwise wait for the probe), and refuse at start a
    configuration it cannot honour, rather than failing every build. An image that is not
    there yet is only a warning: builds will say it."""
    config = state.config
    try:
        version = await state.runner.repo2docker_version(config.build_image)
    except RunnerError as exc:
        logger.warning("cannot check the build image now: %s", exc)
        return
    memory_limit = contract.parse_quantity(config.memory_limit)
    if not memory_limit:
        return
    try:
        check_supported(version, config.build_image, memory_limit)
    except UnsupportedSetting as exc:
        raise kopf.PermanentError(f"invalid configuration: {exc}") from None


async def _adopt_running_builds(state: OperatorState) -> None:
    """Adopt the build containers that survived a restart (the core's ``adopt``) before any
    new build may start: daemons start only after start-up handlers finish. A container is
    still wanted while its resource (same uid) exists, has not finished and is held by this
    builder (or by none: an operator from before claims started it); the daemon of that
    resource then re-attaches to it. Any other one is removed: a container of a build that
    went back to the queue while this builder was lost would be a second build of it."""

    async def wanted(container: BuildContainer) -> bool:
        ref = container.ref
        try:
            obj = await state.resources.get(ref.namespace, ref.name)
        except Exception as exc:  # noqa: BLE001 - unsure (API trouble): keep it, the daemon decides
            return getattr(exc, "status", None) != 404
        status = BuildStatus.from_status(obj.get("status"))
        return (
            obj["metadata"]["uid"] == ref.uid
            and not status.phase.terminal
            and status.builder in (None, state.config.builder)
        )

    await adopt(state.runner, state.queue, wanted)


async def _mark_finished(state: OperatorState, namespace: str, name: str, uid: str, logger: logging.Logger) -> None:
    if uid in state.marking:  # marked, or being marked, by this process already
        return
    state.marking.add(uid)
    finished_at = int(time.time())
    try:
        await state.resources.mark_finished(namespace, name, uid, finished_at, FINALIZER)
    except Exception as exc:  # noqa: BLE001 - the relist after a restart marks it (finished_build)
        state.marking.discard(uid)  # the watch's next sight of it tries again
        logger.warning("could not mark the build finished: %s", exc)
    state.expiries.finished(namespace, name, uid, finished_at)


@kopf.on.cleanup()
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    if memo.get("state"):
        await memo.state.close()


def _under_way(status: kopf.Status, **_: Any) -> bool:
    """A build that needs its daemon: decided (a phase written), not finished."""
    phase = (status or {}).get("phase")
    return bool(phase) and not BuildStatus.from_status(status).phase.terminal


@kopf.on.event(contract.GROUP, contract.VERSION, contract.PLURAL)
async def build_event(
    type: str | None,
    body: kopf.Body,
    status: kopf.Status,
    spec: kopf.Spec,
    meta: kopf.Meta,
    name: str,
    namespace: str,
    uid: str,
    memo: kopf.Memo,
    logger: logging.Logger,
    **_: Any,
) -> None:
    """Every event of every build the watch shows, in one handler (kopf calls each event
    handler with a task, a log line and a result of its own: three handlers tripled that).

    What the other builders hold, whose build was claimed when and who built each repository
    go into `claims.ClusterView` (the cap across builders, the fair order, cache affinity).
    A build nobody has decided yet is decided here, before any daemon (`new_build`); a
    finished one the watch still shows (its release failed, or an operator from before the
    releases finished it) is released."""
    state: OperatorState | None = memo.get("state")
    if state is None:
        return
    deleted = type == "DELETED"  # deleted, or released (out of the watch's field selector)
    state.seen_build(uid, dict(status or {}), claims.requester_of(dict(meta)), deleted, (spec or {}).get("repoUrl", ""))
    if deleted:
        state.marking.discard(uid)
        state.deciding.discard(uid)
    elif BuildStatus.from_status(status).phase.terminal:
        await _mark_finished(state, namespace, name, uid, logger)
    elif not (status or {}).get("phase"):
        await new_build(state, body, logger)


async def _asking_again(attempt: Callable[[], Awaitable[T]], what: str, logger: logging.Logger) -> T:
    """`attempt()`, asked again with back-off while it fails in a way that asking again may
    mend (the API server busy, a dropped connection): kopf does not retry event handlers."""

    def tell(exc: BaseException, delay: float) -> None:
        logger.warning("cannot %s yet (%s); asking again in %.0f s", what, exc, delay)

    return await retry(
        attempt, retry_on=Exception, when=worth_asking_again, backoff=Backoff.doubling(0.5, 30.0), on_retry=tell
    )


async def new_build(state: OperatorState, body: kopf.Body, logger: logging.Logger) -> None:
    """Decide a build no operator has decided yet, in one status write guarded by the version
    the watch showed (no read): an image that exists is `Succeeded` and released at once, an
    invalid request `Failed`; anything else `Pending`, and its daemon takes it from there.

    Most requests name an image that exists (every launch after the first of a commit, a
    restarted hub's prebuilds), and a daemon, a finalizer, a queue turn and an estimate for
    each cost a tenth of a second and grew with the queue; this costs one look at the image
    and one write. With several builders every one decides, and the API server accepts only
    the first write: the others get 409 and see the decision in their next event. Errors
    that asking again may mend (the API server busy, a dropped connection) are asked again:
    kopf does not retry event handlers."""
    uid = body.meta["uid"]
    if uid in state.deciding:  # an event of it while deciding (kopf batches, but a decision may outlast that)
        return
    state.deciding.add(uid)
    try:
        await _asking_again(lambda: _decide(state, body, logger), "decide the build", logger)
    except Exception as exc:  # noqa: BLE001 - left undecided: the next event of it, or the next start, decides
        logger.error("cannot decide the build: %s", exc)
    finally:
        state.deciding.discard(uid)


async def _decide(state: OperatorState, body: kopf.Body, logger: logging.Logger) -> None:
    """The decision, from the resource as the watch event showed it (its resourceVersion
    guards the write)."""
    meta = body.meta
    try:
        build_spec = _build_spec(body.spec, state.config)
    except InvalidBuildRequest as exc:
        message = f"Invalid build request: {exc}"
        if await _finish_new(
            state,
            meta,
            {
                "phase": Phase.FAILED.value,
                "message": message,
                "completionTime": now_iso(),
                "observedGeneration": meta.get("generation"),
            },
        ):
            _event(body, Phase.FAILED, message)
            state.metrics.finished(Phase.FAILED, None, cached=False)
        return
    decided = {"observedGeneration": meta.get("generation"), "shortCommit": build_spec.commit[:7]}
    try:
        reason = await no_build_needed(state.runner, build_spec.image, burst=True)
    except RunnerError:  # Docker does not answer: the build's job fails with what it says
        reason = None
    if reason is None:
        await state.resources.patch_status_at(
            meta["namespace"], meta["name"], meta["resourceVersion"], {**decided, "phase": Phase.PENDING.value}
        )
        return
    when = now_iso()
    if await _finish_new(
        state,
        meta,
        {
            **decided,
            "phase": Phase.SUCCEEDED.value,
            "message": reason,
            "image": build_spec.image,
            "builder": state.config.builder,
            "startTime": when,
            "completionTime": when,
        },
    ):
        if state.collector is not None:
            state.collector.touch(build_spec.image)  # its server starts next: a use
        state.metrics.finished(Phase.SUCCEEDED, None, cached=True)
        logger.debug("no build needed: %s", reason)


async def _finish_new(state: OperatorState, meta: kopf.Meta, fields: dict[str, Any]) -> bool:
    """Write a new build's outcome and release it in the same write (guarded by the version
    `meta` shows): `finishedAt` takes it out of the watch and is what its TTL counts from
    (after a restart too). False if another write came first."""
    namespace, name, uid = meta["namespace"], meta["name"], meta["uid"]
    finished_at = int(time.time())
    if not await state.resources.patch_status_at(
        namespace, name, meta["resourceVersion"], {**fields, contract.STATUS_FINISHED_AT: finished_at}
    ):
        return False
    state.marking.add(uid)
    state.expiries.finished(namespace, name, uid, finished_at)
    return True


# On deletion kopf first only sets `stopped` (for cancellation_backoff seconds), and cancels
# the task after that; the finalizer stays until the daemon has exited. Our daemon reacts to
# `stopped` at once, so the backoff is just head-room for killing a container.
@kopf.daemon(
    contract.GROUP, contract.VERSION, contract.PLURAL, when=_under_way, cancellation_backoff=20, cancellation_timeout=10
)
async def build_daemon(
    body: kopf.Body,
    spec: kopf.Spec,
    status: kopf.Status,
    meta: kopf.Meta,
    name: str,
    namespace: str,
    uid: str,
    memo: kopf.Memo,
    stopped: kopf.DaemonStopped,
    logger: logging.Logger,
    **_: Any,
) -> None:
    """One build, from its resource to its outcome: accept the spec, run the job until it
    ends or the resource goes, record what happened."""
    state: OperatorState = memo.state
    if not _under_way(status):  # filtered out by `when`; kept for a status that changed under the filter
        return
    if contract.LABEL_FINISHED_AT in (meta.get("labels") or {}):
        await _remove_forged_mark(state, body, namespace, name, uid, logger)
    me = state.config.builder
    ref = BuildRef(namespace, name, uid)
    publisher = _publisher(state, ref, status)
    build_spec = await _accepted_spec(state, body, spec, meta, publisher, logger)
    if build_spec is None:
        return
    try:
        credential = await _credential(
            state, build_spec, namespace, name, uid, logger, hub_created=bool(claims.requester_of(dict(meta)))
        )
    except MissingCredential as exc:
        await _refuse(state, body, meta, publisher, str(exc), logger)
        return
    holder = _holder(status)
    while not stopped:
        if holder is not None and holder != me:
            holder = await _while_held(state, ref, body, holder, status, stopped, logger)
            continue
        job = BuildJob(
            runner=state.runner,
            queue=state.queue,
            ref=ref,
            spec=build_spec,
            publisher=_publisher(state, ref, status),
            order=(meta.get("creationTimestamp") or "", namespace, name),
            requester=claims.requester_of(dict(meta)),
            settings=state.config.build_settings(),
            recorded_start=(status or {}).get("startTime")
            if BuildStatus.from_status(status).phase == Phase.BUILDING
            else None,
            on_phase=lambda p, message: _event(body, p, message),
            credential=credential,
            claim=lambda: claims.claim(state.resources, ref, me),
            me=me,
            alone=state.leases.observations.alone,
            hold=functools.partial(state.affinity_hold, namespace, build_spec.repo_url, meta.get("creationTimestamp")),
        )
        try:
            outcome = await _run(state, job, stopped, status, logger)
        except ClaimLost as lost:
            logger.info("%s holds this build", lost.holder or "nobody")
            holder = lost.holder
            continue
        if outcome is None:  # stopped: cancelled (resource deleted) or left to the next operator
            return
        if outcome.phase == Phase.SUCCEEDED:  # its server starts next: a use, before the container exists
            state.collector.touch(outcome.image or build_spec.image)
        state.metrics.finished(outcome.phase, outcome.duration, outcome.cached)
        logger.info("build finished: %s (%s)", outcome.phase.value, outcome.message.splitlines()[0])
        await _mark_finished(state, namespace, name, uid, logger)
        return


def _holder(status: kopf.Status) -> str | None:
    """The builder that holds the build, from the live status kopf keeps current."""
    return (status or {}).get("builder") or None


def _publisher(state: OperatorState, ref: BuildRef, status: kopf.Status) -> StatusPublisher:
    """Writes into the build's status while no other builder holds it: after a claim, only
    the claimer writes (a builder that was deemed lost must not overwrite the new run). While
    the build looks unclaimed here, the write is guarded by the resourceVersion it was checked
    with: a claim this builder's watch has not shown yet must not be overwritten by "Queued"."""
    me = state.config.builder

    async def send(fields: dict[str, Any]) -> Any:
        holder = _holder(status)
        if holder == me:
            return await state.resources.patch_status(ref.namespace, ref.name, fields)
        if holder is None:
            return await state.resources.patch_status_where(
                ref.namespace, ref.name, ref.uid, lambda now: fields if now.get("builder") in (None, me) else None
            )
        return None

    publisher = StatusPublisher(send, interval=state.config.status_interval)
    publisher.current.update(dict(status or {}))
    return publisher


# How long the watch may lag behind what a claim's read showed before we believe the watch.
HOLDER_LAG = 3.0


async def _while_held(
    state: OperatorState,
    ref: BuildRef,
    body: kopf.Body,
    holder: str,
    status: kopf.Status,
    stopped: kopf.DaemonStopped,
    logger: logging.Logger,
) -> str | None:
    """Another builder holds the build: wait until it finishes (the daemon is stopped), it
    changes hands, or its builder is lost, and then queue it again. The holder after that."""
    differs_since: float | None = None
    loop = asyncio.get_running_loop()
    while not stopped:
        live = _holder(status)
        if live == holder:
            differs_since = None
        elif differs_since is None:
            differs_since = loop.time()
        elif loop.time() - differs_since > HOLDER_LAG:
            return live
        if state.leases.lost(holder):
            if await claims.requeue(state.resources, ref, holder):
                message = claims.LOST_MESSAGE.format(node=holder)
                logger.warning(message)
                try:
                    kopf.event(body, type="Warning", reason="Requeued", message=message)
                except Exception:  # noqa: BLE001 - an event is nice to have
                    logger.debug("could not post event", exc_info=True)
            return None
        await asyncio.sleep(1.0)
    return holder


class MissingCredential(Exception):
    """The build asked for the hub's hand-over of a user's credential, and there is none."""


async def _credential(
    state: OperatorState,
    spec: BuildSpec,
    namespace: str,
    name: str,
    uid: str,
    logger: logging.Logger,
    hub_created: bool,
) -> CloneCredentials:
    """What the clone uses: the user's token the hub handed to this build in its own Secret
    (for the repository only), and the operator's for the repository's host (submodules
    there too), the latter only for a build the hub created (it has a requester, which the
    chart's admission policy lets only the hub set): the hub checked that its user may read
    the repository; a resource anyone else made would read private repositories with the
    operator's credentials and serve them as an image."""
    repository = await _handed_over(state, namespace, name, uid) if spec.user_credentials else None
    own = _own_credential(state, spec, logger) if hub_created else None
    return CloneCredentials(repository=repository, host=own)


def _own_credential(state: OperatorState, spec: BuildSpec, logger: logging.Logger) -> GitCredential | None:
    if not state.config.git_credentials:
        return None
    # Read now: a rotated Secret is used from the next build on. An unreadable file is
    # logged, and the build goes on without (a private repository fails with git's answer).
    try:
        return match(spec.repo_url, load_file(state.config.git_credentials, "--git-credentials"))
    except (OSError, ValueError) as exc:
        logger.error("repository credentials: %s", exc)
        return None


# The hub creates the Secret right after the resource (it needs the resource's uid to be its
# owner): a freshly created build may be seen before its Secret exists, or while a stale one
# of an earlier resource of the same name is being replaced.
HANDOVER_WAIT = 30.0


async def _handed_over(state: OperatorState, namespace: str, name: str, uid: str) -> GitCredential:
    secret_name = gitcredentials.secret_name(name)

    async def read() -> GitCredential:
        secret = await state.secrets.read(namespace, secret_name)
        if secret is None:
            raise LookupError(f"the Secret {secret_name} was not handed over within {HANDOVER_WAIT:.0f} s")
        return gitcredentials.from_secret(secret, name, uid)

    try:
        return await retry(
            read,
            retry_on=(LookupError, gitcredentials.ForeignSecret),
            backoff=Backoff.doubling(0.2, 5.0),
            within=HANDOVER_WAIT,
        )
    except (LookupError, gitcredentials.ForeignSecret) as exc:
        raise MissingCredential(f"The credential this build was to clone with is missing: {exc}.") from None


async def _refuse(
    state: OperatorState,
    body: kopf.Body,
    meta: kopf.Meta,
    publisher: StatusPublisher,
    message: str,
    logger: logging.Logger,
) -> None:
    """Fail the build before it starts, saying why (status, event, metrics), and release it."""
    await publisher.update(
        {
            "phase": Phase.FAILED.value,
            "message": message,
            "completionTime": now_iso(),
            "observedGeneration": meta.get("generation"),
        }
    )
    _event(body, Phase.FAILED, message)
    state.metrics.finished(Phase.FAILED, None, cached=False)
    await _mark_finished(
        state, body["metadata"]["namespace"], body["metadata"]["name"], body["metadata"]["uid"], logger
    )


async def _accepted_spec(
    state: OperatorState,
    body: kopf.Body,
    spec: kopf.Spec,
    meta: kopf.Meta,
    publisher: StatusPublisher,
    logger: logging.Logger,
) -> BuildSpec | None:
    """The spec as this operator will build it, or None after recording why it will not."""
    try:
        build_spec = _build_spec(spec, state.config)
    except InvalidBuildRequest as exc:
        await _refuse(state, body, meta, publisher, f"Invalid build request: {exc}", logger)
        return None
    return build_spec


async def _run(
    state: OperatorState, job: BuildJob, stopped: kopf.DaemonStopped, status: kopf.Status, logger: logging.Logger
) -> BuildOutcome | None:
    """The job's outcome, or None when the daemon was stopped before it ended. ClaimLost when
    another builder holds the build: while it queued here, or while it ran here (this builder
    was deemed lost and the build went to another): then its container is removed, silently."""
    job_task = asyncio.create_task(job.run(), name=f"build {job.ref.namespace}/{job.ref.name}")
    stop_task = asyncio.create_task(_until_stopped(stopped))
    taken_task = asyncio.create_task(_until_taken(status, job.me))
    state.wanted_images[job.spec.image] += 1
    try:
        await asyncio.wait({job_task, stop_task, taken_task}, return_when=asyncio.FIRST_COMPLETED)
        if taken_task.done() and not job_task.done():
            job.kill_on_cancel, job.record_cancel = job.claimed, False
            job_task.cancel()
            await asyncio.gather(job_task, return_exceptions=True)
            if job.claimed:
                logger.warning(
                    "this builder's claim was taken over by %s: its build container was removed", taken_task.result()
                )
            raise ClaimLost(taken_task.result())
    finally:
        taken_task.cancel()
        if not job_task.done() and _finishing(stopped):
            # The job's own final status made `when` false while it wraps up: let it end.
            await asyncio.shield(job_task)
        elif not job_task.done():
            # Stopped (or cancelled by kopf): the shielded wind-down runs to its end either way.
            await asyncio.shield(_stop_job(job, job_task, stopped, state, logger))
        state.wanted_images[job.spec.image] -= 1
        stop_task.cancel()
    if job_task.cancelled():
        return None
    return job_task.result()


async def _remove_forged_mark(
    state: OperatorState, body: kopf.Body, namespace: str, name: str, uid: str, logger: logging.Logger
) -> None:
    """An unfinished resource that says it finished: its creator labelled it so (the
    operator marks only finished ones). Build it, and drop the label, which the TTL sweep
    and people reading `kubectl get` would believe."""
    message = (
        f"The label {contract.LABEL_FINISHED_AT} was set on a build that has not finished; "
        f"it was removed and the build goes ahead."
    )
    logger.warning(message)
    try:
        kopf.event(body, type="Warning", reason="ForgedMark", message=message)
        await state.resources.remove_finished_label(namespace, name, uid)
    except Exception as exc:  # noqa: BLE001 - the build goes ahead either way; the sweep ignores the label
        logger.warning("could not remove the label: %s", exc)


def _finishing(stopped: kopf.DaemonStopped) -> bool:
    reason = stopped.reason
    return bool(
        reason
        and reason & kopf.DaemonStoppingReason.FILTERS_MISMATCH
        and not reason & (kopf.DaemonStoppingReason.RESOURCE_DELETED | kopf.DaemonStoppingReason.OPERATOR_EXITING)
    )


async def _stop_job(
    job: BuildJob, job_task: asyncio.Task, stopped: kopf.DaemonStopped, state: OperatorState, logger: logging.Logger
) -> None:
    """Deleted: cancel the build and remove its container. Operator exiting: leave the
    container running; the next operator re-attaches to it by its labels."""
    job.kill_on_cancel = bool(stopped.reason and stopped.reason & kopf.DaemonStoppingReason.RESOURCE_DELETED)
    job_task.cancel()
    await asyncio.gather(job_task, return_exceptions=True)
    if job.kill_on_cancel:
        state.metrics.finished(Phase.CANCELLED, None, cached=False)
        logger.info("build cancelled: the resource was deleted")


async def _until_taken(status: kopf.Status, me: str) -> str:
    """Another builder's name, once the live status shows that it holds the build."""
    while (holder := _holder(status)) in (None, me):
        await asyncio.sleep(0.5)
    return holder


async def _until_stopped(stopped: kopf.DaemonStopped) -> None:
    await stopped.wait()  # an awaitable promise, not a coroutine: tasks need one


def _build_spec(spec: Any, config: OperatorConfig) -> BuildSpec:
    """Validate the spec (again: the CRD schema may be older than this code) against what this
    operator allows. Whoever may create a resource is not trusted: the image must be the one
    derived from the spec's own repository and commit, the build image one the admin listed,
    and the limits may only be lowered."""
    build_spec = contract.check_image_of(BuildSpec.from_spec(dict(spec)), config.image_prefix)
    if build_spec.build_image and build_spec.build_image not in (config.build_image, *config.allowed_build_images):
        raise InvalidBuildRequest(f"the build image {build_spec.build_image!r} is not one this operator allows")
    return dataclasses.replace(
        build_spec,
        memory_limit=contract.lower_only(build_spec.memory_limit, contract.parse_quantity(config.memory_limit)),
        cpu_limit=contract.lower_only(build_spec.cpu_limit, config.cpu_limit),
    )


def _event(body: kopf.Body, phase: Phase, message: str) -> None:
    kind, reason = EVENT_REASONS[phase]
    first_line = message.splitlines()[0] if message else phase.value
    try:
        kopf.event(body, type=kind, reason=reason, message=first_line[:1000])
    except Exception:  # noqa: BLE001 - an event is nice to have, never worth a failed build
        logging.getLogger(__name__).debug("could not post event", exc_info=True)
