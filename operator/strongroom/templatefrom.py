"""``target.template.templateFrom``: templates kept in ConfigMaps of the ManagedSecret's own
namespace (each ConfigMap key is a Secret key, its value the template), so that one ConfigMap
shared by many ManagedSecrets changes them all (the operator watches ConfigMaps and re-syncs
those that name it: :mod:`strongroom.operator.runtime`).

Only the ManagedSecret's own namespace is read, and only the ConfigMaps it names; a ConfigMap
holds templates, never values. Whoever may update such a ConfigMap shapes the Secrets rendered
from it (a DSN's host, for one): docs/security.md says to grant that as you grant the Secret.
"""

from __future__ import annotations

from typing import Any

from kubernetes.client import CoreV1Api
from kubernetes.client.exceptions import ApiException

from strongroom import validate
from strongroom.errors import TemplateError, ValidationError
from strongroom.kubewrites import read_json
from strongroom.render import TemplateSpec


def resolve(core: CoreV1Api, namespace: str, template: TemplateSpec | None) -> TemplateSpec | None:
    """``template`` with its ConfigMaps' templates added, or :class:`TemplateError` naming the
    ConfigMap that is missing or holds a key that is no Secret key."""
    if template is None or not template.config_maps:
        return template
    sources: dict[str, str] = {}
    for name in template.config_maps:
        sources.update(_templates(core, namespace, name))
    return template.with_sources(sources)


def _templates(core: CoreV1Api, namespace: str, name: str) -> dict[str, str]:
    where = f"configMap/{name}"
    try:
        config_map: dict[str, Any] = read_json(core.read_namespaced_config_map(
            name, namespace, _preload_content=False))  # fmt: skip
    except ApiException as exc:
        if exc.status == 404:
            raise TemplateError(where, None, f"ConfigMap {name} (templateFrom) does not exist") from None
        raise
    data = config_map.get("data") or {}
    for key in data:
        try:
            validate.key(key, write=True)
        except ValidationError:
            raise TemplateError(where, None, "a key of the ConfigMap is no Secret key") from None
    return {str(k): str(v) for k, v in data.items()}
