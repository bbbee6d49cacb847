"""Evaluation that a comparison can trust: the same sampled candidates for every model, one neutral
tie rule, each test user's outcome recorded, and bootstrap confidence intervals over test users."""
from recbole_trsr.evaluation.bootstrap import bootstrap_ci, paired_bootstrap
from recbole_trsr.evaluation.candidates import (FixedCandidatesSampler, fix_eval_candidates, fix_full_ranking,
                                                sampled_candidates)
from recbole_trsr.evaluation.per_user import PROTOCOL, PerUserRecorder
from recbole_trsr.evaluation.ties import per_user_metrics, rank_counts

__all__ = ["FixedCandidatesSampler", "PROTOCOL", "PerUserRecorder", "bootstrap_ci", "fix_eval_candidates", "fix_full_ranking",
           "paired_bootstrap", "per_user_metrics", "rank_counts", "sampled_candidates"]
