"""The values API: tenants and pipelines set and read values with their Kubernetes identity.

An entry point beside ``cli.py`` and ``operator/``, calling :class:`strongroom.api.Strongroom`
as they do. Every request is authenticated by the cluster (a TokenReview, :mod:`.auth`),
authorized by the cluster's RBAC (a SubjectAccessReview on the virtual subresource
``managedsecrets/values`` in ``strongroom.io``) and audited under that identity. Modules:
:mod:`.routes` (paths and handlers), :mod:`.auth`, :mod:`.errors` (JSON errors with stable
codes), :mod:`.tls`, :mod:`.ratelimit`, :mod:`.openapi`, :mod:`.serve` (the process).
"""
