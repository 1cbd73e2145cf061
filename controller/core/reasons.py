"""Reason constants: every decision and condition names one of these.

They are stable strings (CamelCase, as Kubernetes condition reasons) that
scripts and alerts may match on; messages carry the numbers.
"""

FIRST_VERSION = "FirstVersion"
NEW_VERSION = "NewVersion"
CORPUS_CHANGED = "CorpusChanged"
CHECKS_PENDING = "ChecksPending"
WEIGHT_CHANGED = "WeightChanged"
ROLLOUT_COMPLETE = "RolloutComplete"
GATE_FAILED = "GateFailed"
GATES_PASSED = "GatesPassed"
BACK_ON_STABLE = "ManifestBackOnStable"
HISTORY_LIMIT = "HistoryLimit"
INDEX_VERSION_IMMUTABLE = "IndexVersionImmutable"
MANUAL_ROLLBACK = "ManualRollback"
UP_TO_DATE = "UpToDate"
SUSPENDED = "Suspended"
HELD = "HeldAfterRollback"
DRIFT_DETECTED = "DriftDetected"
NO_DRIFT = "NoDrift"
RECONCILE_ERROR = "ReconcileError"
MANIFEST_CHANGED = "ManifestChanged"
CORPUS_DRIFT = "CorpusDrift"
NO_CORPUS_DRIFT = "NoCorpusDrift"
RETRAINED = "Retrained"
INDEX_NOT_TRAINED = "IndexNotTrained"
REVERTED_TO_CANARY = "RevertedToCanary"  # the manifest asks for the stable below 100%: back beside its previous stable
ROLLBACK = "Rollback"  # the manifest names a version older than the stable: the alias goes back to it
PREVIOUS_STABLE_UNAVAILABLE = "PreviousStableUnavailable"  # such a revert, but the earlier stable is gone or failed
RESUMED = "Resumed"
CORPUS_SHRANK = "CorpusShrank"
ANALYSIS_LOOK = "AnalysisLook"  # an online analysis was looked at; no step transition
ROLLOUT_ABORTED = "RolloutAborted"  # a stepped rollout was aborted (operator, online gates, timeout)
REFRESHED_IN_PLACE = "RefreshedInPlace"  # same model, corpus changed: rows removed/added in the serving index
REBUILD_DUE = "RebuildDue"  # spec.reembed.rebuildAfter reached: the corpus change is a full rebuild instead
