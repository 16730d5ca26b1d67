"""Accounts: API keys, credits and the per-key QPS limit."""

from clothseg.accounts.keys import TASK_COST, Accounts, InsufficientCredits, KeyInfo
from clothseg.accounts.ratelimit import LimiterUnavailable, RateLimiter, RedisTokenBucketLimiter, TokenBucketLimiter

__all__ = ["TASK_COST", "Accounts", "InsufficientCredits", "KeyInfo", "LimiterUnavailable", "RateLimiter",
           "RedisTokenBucketLimiter", "TokenBucketLimiter"]
