"""The real components tests run against, started on loopback for one test session.

Binaries come from ``scripts/testenv`` (cached under ~/.cache/strongroom). Run locally without
one, the tests needing it skip with a message saying how to get it; in CI (``CI=true``) a
missing component is a failure, never a silent skip.
"""
