"""The kopf layer: handlers (thin) and the runtime that schedules reconciles.

Importing :mod:`strongroom.operator.handlers` registers the handlers with kopf; ``strongroom
run`` does that and starts kopf. The sync logic itself lives in :mod:`strongroom.sync`.
"""
