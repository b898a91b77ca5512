"""A ManagedSecret's spec as the operator reads it: the CRD's defaults applied again, and the
rules of :mod:`strongroom.policy` applied again, because the CRD may be older than the
operator, or edited.

:meth:`Spec.parse` raises :class:`strongroom.policy.SpecRefusedError` with a message that names the
field; the reconcile turns it into ``Ready=False InvalidSpec``. :meth:`Target.parse` is the
lenient part that deleting and reporting need: a ManagedSecret whose spec is refused must still
be deletable according to its deletionPolicy.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from strongroom import policy, presets, validate
from strongroom.dbitem import DatabaseItem, check_database_keys, parse_database
from strongroom.errors import ValidationError
from strongroom.render import TemplateSpec, parse_template

CREATION_POLICIES = ("Owner", "Orphan", "Merge")
DELETION_POLICIES = ("Retain", "Delete")
REFRESH_POLICIES = ("Periodic", "OnChange", "CreatedOnce")
WORKLOAD_KINDS = ("Deployment", "StatefulSet", "DaemonSet")
SOURCES = ("generate", "fromSecret", "fromManagedSecret", "sealed", "database")  # exclusive


@dataclasses.dataclass(frozen=True)
class Reference:
    """``data[].fromManagedSecret``: a stored key of another ManagedSecret (``namespace`` None:
    the same namespace as the one that refers to it)."""

    name: str
    key: str
    namespace: str | None = None

    def where(self, here: str) -> str:
        """``namespace/name.key`` as messages and audit details write it."""
        return f"{self.namespace or here}/{self.name}.{self.key}"


@dataclasses.dataclass(frozen=True)
class DataItem:
    key: str
    generate: Mapping[str, Any] | None = None
    from_secret: Mapping[str, Any] | None = None
    rotation_period: timedelta | None = None
    from_managed_secret: Reference | None = None
    sealed: str | None = None  # a blob of strongroom.sealing, opened by sources/sealed.py
    database: DatabaseItem | None = None  # issued by sources/database.py


@dataclasses.dataclass(frozen=True)
class Target:
    """Where the Secret goes and what happens to it on deletion."""

    name: str
    creation_policy: str
    deletion_policy: str

    @classmethod
    def parse(cls, name: str, spec: Mapping[str, Any]) -> Target:
        target = spec.get("target") if isinstance(spec.get("target"), Mapping) else {}
        assert isinstance(target, Mapping)  # noqa: S101 - narrowed above
        return cls(
            name=str(target.get("name") or name),
            creation_policy=str(target.get("creationPolicy") or "Owner"),
            deletion_policy=str(target.get("deletionPolicy") or "Delete"),
        )


def _choice(field: str, value: object, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise policy.SpecRefusedError(f"{field} must be one of {', '.join(allowed)}")
    return str(value)


def _string_map(field: str, value: object, *, labels: bool = False) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise policy.SpecRefusedError(f"{field} must map strings to strings")
    policy.check_metadata_keys(field, value, labels=labels)
    return dict(value)


def _item(raw: object, index: int) -> DataItem:
    if not isinstance(raw, Mapping) or not isinstance(raw.get("key"), str) or not raw["key"]:
        raise policy.SpecRefusedError(f"data[{index}] needs a key")
    key = raw["key"]
    try:  # the store's rule (Kubernetes' rule for Secret keys): `..data` is refused here too
        validate.key(key, write=True)
    except ValidationError as exc:
        raise policy.SpecRefusedError(f"data[{index}].key: {exc}") from None
    generate, from_secret = raw.get("generate"), raw.get("fromSecret")
    sources = [f for f in SOURCES if raw.get(f) is not None]
    if len(sources) > 1:
        raise policy.SpecRefusedError(f"data[{key}] takes at most one source "
                                      f"({', '.join(SOURCES)})")  # fmt: skip
    sealed = raw.get("sealed")
    if sealed is not None and not isinstance(sealed, str):
        raise policy.SpecRefusedError(f"data[{key}].sealed must be a string")
    period = None
    if isinstance(generate, Mapping) and generate.get("rotationPeriod") is not None:
        period = policy.duration(f"data[{key}].generate.rotationPeriod",
                                 generate["rotationPeriod"], policy.MIN_ROTATION_PERIOD)  # fmt: skip
    if from_secret is not None and not (
        isinstance(from_secret, Mapping) and from_secret.get("name") and from_secret.get("key")
    ):
        raise policy.SpecRefusedError(f"data[{key}].fromSecret needs a name and a key")
    return DataItem(key, generate, from_secret, period,
                    from_managed_secret=parse_reference(key, raw.get("fromManagedSecret")),
                    sealed=sealed, database=parse_database(key, raw.get("database")))  # fmt: skip


def parse_reference(key: str, raw: object) -> Reference | None:
    """``fromManagedSecret``, checked by the store's rules for names and keys."""
    if raw is None:
        return None
    field = f"data[{key}].fromManagedSecret"
    if not isinstance(raw, Mapping) or not isinstance(raw.get("name"), str) or not isinstance(
        raw.get("key"), str
    ):
        raise policy.SpecRefusedError(f"{field} needs a name and a key")
    namespace = raw.get("namespace")
    if namespace is not None and not isinstance(namespace, str):
        raise policy.SpecRefusedError(f"{field}.namespace must be a namespace name")
    try:
        validate.name(raw["name"])
        validate.key(raw["key"], write=True)
        if namespace is not None:
            validate.namespace(namespace, limits=validate.KUBERNETES, write=True)
    except ValidationError as exc:
        raise policy.SpecRefusedError(f"{field}: {exc}") from None
    return Reference(name=raw["name"], key=raw["key"], namespace=namespace or None)


@dataclasses.dataclass(frozen=True)
class Spec:
    """A ManagedSecret spec with the defaults the CRD declares applied again defensively."""

    target_name: str
    target_type: str
    labels: Mapping[str, str]
    annotations: Mapping[str, str]
    immutable: bool
    creation_policy: str
    deletion_policy: str
    data: tuple[DataItem, ...]
    refresh_interval: timedelta
    refresh_policy: str
    keep_previous: timedelta | None
    rollout_restart: tuple[tuple[str, str], ...]
    template: TemplateSpec | None = None

    @classmethod
    def parse(cls, name: str, spec: Mapping[str, Any]) -> Spec:
        """The spec, or :class:`~strongroom.policy.SpecRefusedError` naming the first bad field."""
        target = spec.get("target") or {}
        rotation = spec.get("rotation") or {}
        if not isinstance(target, Mapping) or not isinstance(rotation, Mapping):
            raise policy.SpecRefusedError("target and rotation must be objects")
        where = Target.parse(name, spec)
        try:
            validate.name(where.name)
        except ValidationError as exc:
            raise policy.SpecRefusedError(f"target.name: {exc}") from None
        template = parse_template(target.get("template"))
        target_type = secret_type(spec)
        policy.check_target_type(target_type)
        keep = rotation.get("keepPrevious")
        restarts = []
        for item in spec.get("rolloutRestart") or ():
            if not isinstance(item, Mapping) or not item.get("name"):
                raise policy.SpecRefusedError("rolloutRestart items need a kind and a name")
            restarts.append((_choice("rolloutRestart.kind", item.get("kind"), WORKLOAD_KINDS),
                             str(item["name"])))  # fmt: skip
        data = tuple(_item(raw, i) for i, raw in enumerate(spec.get("data") or ()))
        check_database_keys([(item.key, item.database) for item in data])
        return cls(
            target_name=where.name,
            target_type=target_type,
            labels={**_string_map("target.labels", target.get("labels"), labels=True),
                    **(template.labels if template else {})},
            annotations={**_string_map("target.annotations", target.get("annotations")),
                         **(template.annotations if template else {})},
            immutable=bool(target.get("immutable", False)),
            creation_policy=_choice("target.creationPolicy", where.creation_policy,
                                    CREATION_POLICIES),
            deletion_policy=_choice("target.deletionPolicy", where.deletion_policy,
                                    DELETION_POLICIES),
            data=data,
            refresh_interval=policy.duration("refreshInterval", spec.get("refreshInterval") or "1h",
                                             policy.MIN_REFRESH_INTERVAL),
            refresh_policy=_choice("refreshPolicy", spec.get("refreshPolicy") or "Periodic",
                                   REFRESH_POLICIES),
            keep_previous=None if keep is None else policy.duration(
                "rotation.keepPrevious", keep, policy.MIN_KEEP_PREVIOUS),
            rollout_restart=tuple(restarts),
            template=template,
        )


def config_maps_of(spec: Mapping[str, Any]) -> frozenset[str]:
    """The ConfigMaps a spec takes templates from (leniently: for the watch, not for a sync)."""
    target = spec.get("target") if isinstance(spec.get("target"), Mapping) else {}
    template = target.get("template") if isinstance(target, Mapping) else None
    items = template.get("templateFrom") if isinstance(template, Mapping) else None
    return frozenset(str(item["configMap"]["name"]) for item in items or ()
                     if isinstance(item, Mapping) and isinstance(item.get("configMap"), Mapping)
                     and item["configMap"].get("name"))  # fmt: skip


def secret_type(spec: Mapping[str, Any]) -> str:
    """The type of the Secret a spec asks for: ``target.template.type`` when set (the template
    decides what the data is), else the preset's type, else ``target.type``."""
    target = spec.get("target") if isinstance(spec.get("target"), Mapping) else {}
    assert isinstance(target, Mapping)  # noqa: S101 - narrowed above
    template = target.get("template") if isinstance(target.get("template"), Mapping) else {}
    assert isinstance(template, Mapping)  # noqa: S101 - narrowed above
    preset = presets.PRESETS.get(str(template.get("preset")))
    return str(template.get("type") or (preset.secret_type if preset else None)
               or target.get("type") or "Opaque")  # fmt: skip


def needs_finalizer(target: Target | Spec) -> bool:
    """Whether deleting the ManagedSecret needs the operator.

    Owner + Delete (the default) is Kubernetes' own job: the Secret's controller
    ownerReference lets the garbage collector delete it, with no finalizer to patch in and out
    and nothing stuck if the operator is gone. Retain (drop the ownerReference first), Orphan +
    Delete and Merge (remove only our keys) need work at deletion time, so a finalizer holds
    the object until it is done.
    """
    return not (target.creation_policy == "Owner" and target.deletion_policy == "Delete")
