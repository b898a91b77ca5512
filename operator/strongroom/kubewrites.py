"""The operator's two hottest Kubernetes writes, sent straight on the client's connection pool.

Creating a Secret and replacing a ManagedSecret's status are what every new ManagedSecret
costs. Through the kubernetes client, each spent about a third of its CPU in the client's own
layers before a byte was sent: parameter handling, sanitising a body that is already plain
JSON, and the pool manager parsing the URL again to find the pool it always picks. These two
calls skip that and nothing else: the same ``ApiClient`` supplies the pool (TLS, client
certificates, proxy), the authentication headers (refreshed tokens included), the user agent
and the retries, and a non-2xx answer raises the client's own :class:`ApiException`. Every
other call goes through the client as before.

Also here: the two ways the operator consumes a response it asked the client not to parse.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

import urllib3
from kubernetes.client import ApiClient
from kubernetes.client.exceptions import ApiException
from kubernetes.client.rest import RESTResponse


def discard(response: Any) -> None:
    """Drop an unparsed API response but give its connection back to the pool.

    Writes whose answer is not needed skip the kubernetes client's model parsing, which costs
    more CPU than the request itself.
    """
    response.drain_conn()
    response.release_conn()


def read_json(response: Any) -> dict[str, Any]:
    """An unparsed API response as plain JSON (no client models), its connection given back."""
    try:
        return dict(json.loads(response.data))
    finally:
        response.release_conn()


class DirectWrites:
    def __init__(self, client: ApiClient, timeout: tuple[float, float]) -> None:
        host = client.configuration.host
        self.client = client
        self.prefix = (urllib3.util.parse_url(host).path or "").rstrip("/")
        self.pool = client.rest_client.pool_manager.connection_from_url(host)
        self.timeout = urllib3.Timeout(connect=timeout[0], read=timeout[1])

    def create_secret(self, namespace: str, body: dict[str, Any]) -> None:
        self._send("POST", f"/api/v1/namespaces/{quote(namespace, safe='')}/secrets", body)

    def replace_status(self, api: str, plural: str, namespace: str, name: str, body: Any) -> None:
        """PUT the status subresource; ``api`` is ``group/version``."""
        path = (f"/apis/{api}/namespaces/{quote(namespace, safe='')}/{plural}/"
                f"{quote(name, safe='')}/status")  # fmt: skip
        self._send("PUT", path, body)

    def _send(self, method: str, path: str, body: Any) -> None:
        headers = {**self.client.default_headers, "Accept": "application/json",
                   "Content-Type": "application/json"}  # fmt: skip
        self.client.update_params_for_auth(headers, [], ["BearerToken"])
        response = self.pool.urlopen(
            method, self.prefix + path, body=json.dumps(body, separators=(",", ":")).encode(),
            headers=headers, timeout=self.timeout, preload_content=False,
        )  # fmt: skip
        if not 200 <= response.status < 300:
            try:
                raise ApiException(http_resp=RESTResponse(response))
            finally:
                response.release_conn()
        discard(response)
