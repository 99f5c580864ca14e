"""mlwork: one reproducible loop from data to decision for tabular models.

The public API, importable from the package itself (``from mlwork import DriftDetector``). Names are
loaded on first use, so ``import mlwork`` stays fast and MLflow, LightGBM or whylogs are imported only
by the code that needs them. Subpackages, by layer (a module imports only from its own or lower layers):

- foundations (00-09): ``mlwork.core``, ``mlwork.checks``, ``mlwork.security``, ``mlwork.audit``,
  ``mlwork.report``, ``mlwork.synthetic_pii``, ``mlwork.synthetic``, ``mlwork.series``, ``mlwork.datasets``,
  ``mlwork.privacy``
- data (10-19): ``mlwork.data`` (batches, store, contracts, validation, profile, quarantine, sources, pii_guard)
- drift, fairness and evaluation (20-29): ``mlwork.drift`` (kernels, univariate, power, multivariate, windows, profiles,
  alibi, estimate, report), ``mlwork.fairness`` (metrics, mitigation, explain), ``mlwork.evaluation`` (metrics, explain)
- models (30-39): ``mlwork.models`` (train, artifacts, tracking, registry, card, audits)
- serving and monitoring (40-49): ``mlwork.serve`` (access, predlog, scoring, app, client), ``mlwork.monitor`` (metrics,
  cost, report, check), ``mlwork.alerts`` (detectors, rules, notify)
- production runs and deployment (50-59): ``mlwork.pipelines`` (context, params, steps, runs, html, index, retrain), ``mlwork.schedule``
  (files, serve), ``mlwork.deploy``
- panels (60-69): ``mlwork.ui``; the demo (80) and the command line (90): ``mlwork.demo``, ``mlwork.cli``

This file is written by hand (nbdev keeps only its ``__version__`` line current).
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> module that defines it (relative to the package)
_API: dict[str, str] = {
    # foundations
    **dict.fromkeys(['MlworkError', 'ConfigError', 'InvalidParameter', 'DataError', 'ContractViolation', 'NotFound',
                     'ConflictError', 'NotFittedError', 'SignatureError', 'PermissionDenied', 'Workspace',
                     'open_workspace', 'init_workspace', 'get_logger', 'setup_logging'], '.core'),
    **dict.fromkeys(['AuditLog', 'Anchor'], '.audit'),
    **dict.fromkeys(['Report'], '.report'),
    **dict.fromkeys(['generate', 'SyntheticData'], '.synthetic'),
    **dict.fromkeys(['generate_series', 'Change', 'SeriesData'], '.series'),
    **dict.fromkeys(['load_dataset', 'list_datasets', 'load_acs', 'acs_windows'], '.datasets'),
    **dict.fromkeys(['scan_pii', 'PiiScan', 'PiiPolicy', 'apply_policy', 'PseudonymKey', 'k_anonymity', 'KAnonymity'], '.privacy'),
    # data
    **dict.fromkeys(['DatasetRef', 'parse_ref', 'load_batch', 'scan_batch'], '.data.batches'),
    **dict.fromkeys(['DatasetStore', 'DatasetReader'], '.data.store'),
    **dict.fromkeys(['Contract', 'infer_contract'], '.data.contracts'),
    **dict.fromkeys(['validate', 'ValidationReport'], '.data.validation'),
    **dict.fromkeys(['Profile', 'profile_frame'], '.data.profile'),
    **dict.fromkeys(['validate_into_store', 'QuarantineRun'], '.data.quarantine'),
    # drift
    **dict.fromkeys(['DriftDetector', 'DriftResult', 'dataset_decision'], '.drift.univariate'),
    **dict.fromkeys(['power_table', 'detection_power', 'false_alarm_table'], '.drift.power'),
    **dict.fromkeys(['DomainClassifierDrift', 'MMDDrift', 'MultivariateResult'], '.drift.multivariate'),
    **dict.fromkeys(['drift_over_time', 'WindowedDrift'], '.drift.windows'),
    **dict.fromkeys(['profile_drift'], '.drift.profiles'),
    **dict.fromkeys(['CBPE', 'EstimateResult'], '.drift.estimate'),
    **dict.fromkeys(['drift_report', 'DriftSummary'], '.drift.report'),
    # fairness
    **dict.fromkeys(['fairness_audit', 'FairnessAudit', 'FairnessVerdict', 'group_counts', 'metrics_from_counts'], '.fairness.metrics'),
    **dict.fromkeys(['group_thresholds', 'ThresholdMitigation', 'reweighing', 'tradeoff', 'TradeOff'], '.fairness.mitigation'),
    **dict.fromkeys(['explain_gap', 'GapAttribution'], '.fairness.explain'),
    # evaluation
    **dict.fromkeys(['evaluate', 'compare', 'slice_metrics', 'Performance', 'Comparison'], '.evaluation.metrics'),
    **dict.fromkeys(['explain', 'Explanation'], '.evaluation.explain'),
    # models
    **dict.fromkeys(['train_model', 'TrainedModel', 'LGBMTrainer'], '.models.train'),
    **dict.fromkeys(['Registry', 'ModelVersion'], '.models.registry'),
    **dict.fromkeys(['model_card', 'ModelCard'], '.models.card'),
    **dict.fromkeys(['save_audit', 'model_audits', 'require_audit', 'AuditRecord'], '.models.audits'),
    # serving
    **dict.fromkeys(['KeyStore', 'ApiKey'], '.serve.access'),
    **dict.fromkeys(['PredictionLog', 'read_predictions', 'read_feedback'], '.serve.predlog'),
    **dict.fromkeys(['Scorer', 'FeatureSchema'], '.serve.scoring'),
    **dict.fromkeys(['ServeConfig', 'create_app'], '.serve.app'),
    **dict.fromkeys(['ServiceClient', 'local_service'], '.serve.client'),
    **dict.fromkeys(['deploy_files', 'deploy_plan', 'DeployPlan'], '.deploy'),
    # monitoring and alerts
    **dict.fromkeys(['monitor_run', 'MonitorRun', 'read_metrics'], '.monitor.metrics'),
    **dict.fromkeys(['monitor_check', 'MonitorCheck'], '.monitor.check'),
    **dict.fromkeys(['monitor_report'], '.monitor.report'),
    **dict.fromkeys(['Prices', 'cost_rows'], '.monitor.cost'),
    **dict.fromkeys(['Cusum', 'PageHinkley'], '.alerts.detectors'),
    **dict.fromkeys(['AlertRules', 'IncidentStore', 'evaluate_rules'], '.alerts.rules'),
    **dict.fromkeys(['notify', 'WebhookNotifier', 'EmailNotifier', 'FileNotifier'], '.alerts.notify'),
    **dict.fromkeys(['RetrainPolicy', 'retrain_decision', 'canary_verdict'], '.pipelines.retrain'),
    # production runs
    **dict.fromkeys(['run_pipeline', 'run_over', 'rerun', 'list_runs', 'RunResult', 'RerunResult', 'BatchResult'], '.pipelines.runs'),
    **dict.fromkeys(['find_pipeline', 'list_pipelines', 'Pipeline'], '.pipelines.params'),
    **dict.fromkeys(['notebook_html'], '.pipelines.html'),
    **dict.fromkeys(['write_index'], '.pipelines.index'),
    **dict.fromkeys(['load_schedule', 'Schedule'], '.schedule.files'),
    # panels and the demo
    **dict.fromkeys(['DriftPanel'], '.ui.panels'),
    **dict.fromkeys(['FairnessPanel'], '.ui.fairness'),
    **dict.fromkeys(['MonitorPanel'], '.ui.monitor'),
    **dict.fromkeys(['run_demo'], '.demo'),
}

__all__ = ['__version__', *_API]


def __getattr__(name: str) -> Any:
    "Load a public name from its module on first use (PEP 562)."
    module = _API.get(name)
    if module is None:
        msg = f"module 'mlwork' has no attribute {name!r}"
        raise AttributeError(msg)
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_API))


if TYPE_CHECKING:  # what editors and type checkers see; at run time the names load lazily
    from .alerts.detectors import Cusum, PageHinkley
    from .alerts.notify import EmailNotifier, FileNotifier, WebhookNotifier, notify
    from .alerts.rules import AlertRules, IncidentStore, evaluate_rules
    from .audit import Anchor, AuditLog
    from .core import (ConfigError, ConflictError, ContractViolation, DataError, InvalidParameter, MlworkError,
                       NotFittedError, NotFound, PermissionDenied, SignatureError, Workspace, get_logger, init_workspace,
                       open_workspace, setup_logging)
    from .data.batches import DatasetRef, load_batch, parse_ref, scan_batch
    from .data.contracts import Contract, infer_contract
    from .data.profile import Profile, profile_frame
    from .data.quarantine import QuarantineRun, validate_into_store
    from .data.store import DatasetReader, DatasetStore
    from .data.validation import ValidationReport, validate
    from .datasets import acs_windows, list_datasets, load_acs, load_dataset
    from .demo import run_demo
    from .drift.estimate import CBPE, EstimateResult
    from .drift.multivariate import DomainClassifierDrift, MMDDrift, MultivariateResult
    from .drift.profiles import profile_drift
    from .drift.report import DriftSummary, drift_report
    from .drift.power import detection_power, false_alarm_table, power_table
    from .drift.univariate import DriftDetector, DriftResult, dataset_decision
    from .drift.windows import WindowedDrift, drift_over_time
    from .evaluation.explain import Explanation, explain
    from .fairness.explain import GapAttribution, explain_gap
    from .fairness.metrics import FairnessAudit, FairnessVerdict, fairness_audit, group_counts, metrics_from_counts
    from .fairness.mitigation import ThresholdMitigation, TradeOff, group_thresholds, reweighing, tradeoff
    from .evaluation.metrics import Comparison, Performance, compare, evaluate, slice_metrics
    from .models.audits import AuditRecord, model_audits, require_audit, save_audit
    from .models.card import ModelCard, model_card
    from .models.registry import ModelVersion, Registry
    from .models.train import LGBMTrainer, TrainedModel, train_model
    from .deploy import DeployPlan, deploy_files, deploy_plan
    from .pipelines.html import notebook_html
    from .pipelines.index import write_index
    from .monitor.check import MonitorCheck, monitor_check
    from .monitor.cost import Prices, cost_rows
    from .monitor.metrics import MonitorRun, monitor_run, read_metrics
    from .monitor.report import monitor_report
    from .pipelines.params import Pipeline, find_pipeline, list_pipelines
    from .pipelines.retrain import RetrainPolicy, canary_verdict, retrain_decision
    from .pipelines.runs import BatchResult, RerunResult, RunResult, list_runs, rerun, run_over, run_pipeline
    from .privacy import KAnonymity, PiiPolicy, PiiScan, PseudonymKey, apply_policy, k_anonymity, scan_pii
    from .report import Report
    from .schedule.files import Schedule, load_schedule
    from .serve.access import ApiKey, KeyStore
    from .serve.app import ServeConfig, create_app
    from .serve.client import ServiceClient, local_service
    from .serve.predlog import PredictionLog, read_feedback, read_predictions
    from .serve.scoring import FeatureSchema, Scorer
    from .series import Change, SeriesData, generate_series
    from .synthetic import SyntheticData, generate
    from .ui.fairness import FairnessPanel
    from .ui.monitor import MonitorPanel
    from .ui.panels import DriftPanel
