"""Register a trained model and decide, on the same validation data, whether it replaces the champion.

Registration is the end of a train, and the champion alias moves last: by then everything the version needs has
been logged and loaded back (train/job.py). The steps that follow, each one MLflow call, are recorded on the run
(tag `taxi_duration.state`) so that the next `train` can finish or undo a train killed among them
(`recover_interrupted_runs`): the registry is then as before that train or as after it.

The registry neither fits nor scores: the train job hands it the challenger's metrics and a function that scores
the champion on the same validation trips (`challenge_champion`).
"""

from __future__ import annotations

import json
import math
import os
import socket
from collections.abc import Callable
from dataclasses import asdict, dataclass

import mlflow
from mlflow.entities import RunStatus, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from taxi_duration import __version__
from taxi_duration.faults import crash_point
from taxi_duration.params import PipelineParams
from taxi_duration.serve.champion import load_registered

STATE_TAG = "taxi_duration.state"  # logging -> registering -> committed
PID_TAG = "taxi_duration.pid"
HOST_TAG = "taxi_duration.host"
PREVIOUS_CHALLENGER_TAG = "taxi_duration.previous_challenger"
DECISION_TAG = "promotion_decision"
PROMOTED_TAG = "promoted"
HIGHEST_VERSION_TAG = "taxi_duration.highest_version"  # on the registered model: versions ever created
VERSION_TAG = "taxi_duration_version"  # set on every run this package logs


@dataclass(frozen=True)
class PromotionDecision:
    promote: bool
    metric: str
    challenger: float
    champion: float | None
    champion_version: str | None
    reason: str
    tolerance: float = 0.0


def regime_regressions(
    challenger: dict[str, dict[str, float]], champion: dict[str, dict[str, float]], tolerance: float
) -> list[str]:
    """The regimes where the challenger's RMSLE is worse than the champion's by more than `tolerance` (relative),
    both measured on the same validation trips, as readable reasons."""
    worse = []
    for regime, values in challenger.items():
        theirs = champion.get(regime, {}).get("rmsle")
        ours = values.get("rmsle")
        if theirs is None or ours is None or math.isnan(theirs):
            continue
        if math.isnan(ours) or ours > theirs * (1 + tolerance):
            worse.append(f"{regime} rmsle {ours:.5f} > champion {theirs:.5f} (+{tolerance:.0%} tolerance)")
    return worse


def decide_promotion(
    metric: str,
    challenger: float,
    champion: float | None,
    champion_version: str | None = None,
    tolerance: float = 0.0,
    regressions: list[str] | None = None,
) -> PromotionDecision:
    """Lower is better. No champion yet -> promote. Otherwise the challenger must be lower by more than
    `tolerance`, relative to the champion (0.001: better by more than 0.1%); a tie or a smaller gain (e.g. the
    same model retrained, 1e-15 apart) keeps the current champion; so does a challenger worse than the champion
    in any regime (`regressions`, from `regime_regressions`)."""
    if math.isnan(challenger):
        return PromotionDecision(
            False, metric, challenger, champion, champion_version, f"challenger {metric} is NaN", tolerance
        )
    if champion is None or math.isnan(champion):
        return PromotionDecision(True, metric, challenger, None, champion_version, "no champion yet", tolerance)
    if regressions:
        why = f"challenger worse than champion v{champion_version} in {'; '.join(regressions)}; champion kept"
        return PromotionDecision(False, metric, challenger, champion, champion_version, why, tolerance)
    bar = champion * (1.0 - tolerance)
    if challenger < bar:
        why = (
            f"challenger {metric} {challenger:.5f} < champion v{champion_version} {champion:.5f} "
            f"by more than {tolerance:.2%}"
        )
        return PromotionDecision(True, metric, challenger, champion, champion_version, why, tolerance)
    why = (
        f"challenger {metric} {challenger:.5f} not below champion v{champion_version} {champion:.5f} "
        f"by more than {tolerance:.2%}; champion kept"
    )
    return PromotionDecision(False, metric, challenger, champion, champion_version, why, tolerance)


def alias_version(client: MlflowClient, model_name: str, alias: str) -> str | None:
    """The version an alias points to, or None if the model or alias does not exist."""
    try:
        return str(client.get_model_version_by_alias(model_name, alias).version)
    except MlflowException:
        return None


def process_tags() -> dict[str, str]:
    """Tags a train run starts with: this package's version, and what lets a later `train` tell a run whose
    process died from one still running."""
    return {PID_TAG: str(os.getpid()), HOST_TAG: socket.gethostname(), STATE_TAG: "logging", VERSION_TAG: __version__}


# metrics of a model on this train's validation trips: (the metrics, the metrics per regime)
ChampionScores = tuple[dict[str, float], dict[str, dict[str, float]]]


def challenge_champion(
    client: MlflowClient,
    model_name: str,
    params: PipelineParams,
    metrics: dict[str, float],
    by_regime: dict[str, dict[str, float]],
    score_champion: Callable[[str], ChampionScores],
) -> PromotionDecision:
    """Whether the challenger (`metrics`, `by_regime`) replaces the champion, measured on the same trips.

    `score_champion(model_uri)` scores the champion on this run's validation trips, so both numbers mean the same
    thing; its scores are logged on the active run (`champion_<metric>`, `champion_<regime>_rmsle`). A champion
    that cannot be served (its exported model missing: a train killed by older versions) does not defend its place."""
    metric = params.train.promote_metric
    tolerance = params.train.promote_tolerance
    champion_version = alias_version(client, model_name, params.registry.champion_alias)
    if champion_version is None:
        return decide_promotion(metric, metrics[metric], None, None, tolerance, [])
    try:
        load_registered(model_name, champion_version)
    except Exception as exc:
        why = f"champion v{champion_version} cannot be served ({exc.__class__.__name__}); replaced"
        return PromotionDecision(True, metric, metrics[metric], None, champion_version, why, tolerance)
    champion, champion_by_regime = score_champion(f"models:/{model_name}@{params.registry.champion_alias}")
    mlflow.log_metric(f"champion_{metric}", champion[metric])
    # ... and in every regime: a challenger worse in one of them beyond train.regime_tolerance is not promoted
    mlflow.log_metrics({f"champion_{r}_rmsle": m["rmsle"] for r, m in champion_by_regime.items()})
    regressions = regime_regressions(by_regime, champion_by_regime, params.train.regime_tolerance)
    return decide_promotion(metric, metrics[metric], champion[metric], champion_version, tolerance, regressions)


def next_version(client: MlflowClient, model_name: str) -> str:
    """The number the next registered version will get (MLflow counts deleted versions too; versions this
    package deleted are remembered in a registered-model tag)."""
    try:
        model = client.get_registered_model(model_name)
    except MlflowException:
        return "1"
    highest = int(model.tags.get(HIGHEST_VERSION_TAG, 0) or 0)
    for version in client.search_model_versions(f"name='{model_name}'"):
        highest = max(highest, int(version.version))
    return str(highest + 1)


def _remember_highest(client: MlflowClient, model_name: str, version: str) -> None:
    current = int(client.get_registered_model(model_name).tags.get(HIGHEST_VERSION_TAG, 0) or 0)
    if int(version) > current:
        client.set_registered_model_tag(model_name, HIGHEST_VERSION_TAG, version)


def register_and_promote(
    client: MlflowClient,
    *,
    model_uri: str,
    model_name: str,
    run_id: str,
    decision: PromotionDecision,
    metrics: dict[str, float],
    challenger_alias: str,
    champion_alias: str,
    relog_for_version: Callable[[str], None] | None = None,
) -> str:
    """Record the decision on the run, register the version (tags given at creation), alias it challenger, then
    (last) champion if promoted.

    `relog_for_version(version)` is called if MLflow gave another number than `next_version` predicted (someone
    deleted or registered versions meanwhile), before any alias points at the version."""
    decision_text = json.dumps(asdict(decision))
    decision_tags = {DECISION_TAG: decision_text, PROMOTED_TAG: str(decision.promote).lower()}
    client.log_batch(run_id, tags=[RunTag(key, value) for key, value in decision_tags.items()])
    previous_challenger = alias_version(client, model_name, challenger_alias) or ""
    client.set_tag(run_id, PREVIOUS_CHALLENGER_TAG, previous_challenger)
    client.set_tag(run_id, STATE_TAG, "registering")
    expected = next_version(client, model_name)
    tags = {DECISION_TAG: decision_text, "run_id": run_id}
    tags.update({f"validation_{name}": str(value) for name, value in metrics.items()})
    # one call creates the version with its tags (mlflow.register_model resolves MLflow 3 logged-model URIs)
    version = str(mlflow.register_model(model_uri, model_name, tags=tags).version)
    crash_point("train:registered")
    _remember_highest(client, model_name, version)
    if version != expected and relog_for_version is not None:
        relog_for_version(version)
    client.set_registered_model_alias(model_name, challenger_alias, version)
    crash_point("train:challenger")
    if decision.promote:
        client.set_registered_model_alias(model_name, champion_alias, version)
        crash_point("train:champion")
    client.set_tag(run_id, STATE_TAG, "committed")
    return version


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _is_interrupted(tags: dict[str, str]) -> bool:
    """A run left RUNNING by a process that is gone (same host); runs of older versions carry no pid: gone too."""
    if tags.get(HOST_TAG, socket.gethostname()) != socket.gethostname():
        return False  # another machine's train: it may still be running
    pid = tags.get(PID_TAG)
    return pid is None or (int(pid) != os.getpid() and not _process_alive(int(pid)))


def recover_interrupted_runs(
    client: MlflowClient, experiment_id: str, model_name: str, challenger_alias: str, champion_alias: str
) -> list[dict[str, str]]:
    """Finish or undo every train of this experiment that was killed (run still RUNNING, process gone).

    A run whose version already holds its final alias (champion if promoted, else challenger) had done
    everything: it is marked FINISHED. Any other is marked FAILED and its registered version, if any, is deleted
    after the challenger alias is put back where it was: the registry is as before that train."""
    recovered = []
    runs = client.search_runs([experiment_id], filter_string="attributes.status = 'RUNNING'", max_results=1000)
    for run in runs:
        tags = run.data.tags
        if VERSION_TAG not in tags or not _is_interrupted(tags):
            continue
        run_id = run.info.run_id
        versions = [v for v in client.search_model_versions(f"run_id='{run_id}'") if v.name == model_name]
        outcome = "failed"
        for version in versions:
            number = str(version.version)
            decision = json.loads(version.tags.get(DECISION_TAG, "{}") or "{}")
            final = champion_alias if decision.get("promote") else challenger_alias
            if alias_version(client, model_name, final) == number:
                outcome = "finished"
                continue
            previous = tags.get(PREVIOUS_CHALLENGER_TAG) or None
            if alias_version(client, model_name, challenger_alias) == number:
                if previous and _version_exists(client, model_name, previous):
                    client.set_registered_model_alias(model_name, challenger_alias, previous)
                else:
                    client.delete_registered_model_alias(model_name, challenger_alias)
            _remember_highest(client, model_name, number)
            client.delete_model_version(model_name, number)
        client.set_tag(run_id, STATE_TAG, f"recovered-{outcome}")
        status = RunStatus.FINISHED if outcome == "finished" else RunStatus.FAILED
        client.set_terminated(run_id, RunStatus.to_string(status))
        recovered.append({"run_id": run_id, "status": RunStatus.to_string(status)})
    return recovered


def _version_exists(client: MlflowClient, model_name: str, version: str) -> bool:
    try:
        client.get_model_version(model_name, version)
    except MlflowException:
        return False
    return True
