"""How kopf's own connection (its watches, its patches and events) authenticates: with the
credentials the operator's client uses (`repo2docker_buildcore.kubeapi`).

Without a login handler kopf borrows a client library's configuration when one is installed,
and otherwise reads a kubeconfig itself, knowing neither token files nor exec plugins, or in
a pod calls `https://kubernetes.default.svc`, which needs the cluster's DNS. One reader of
credentials for both clients keeps them the same identity on the same address.
"""

from __future__ import annotations

import asyncio
import datetime
from typing import Any

import kopf

from repo2docker_buildcore.kubeapi import load_credentials


@kopf.on.login(errors=kopf.ErrorsMode.PERMANENT)
async def login(**_: Any) -> kopf.ConnectionInfo:
    """kopf calls this at start and again when the API server refuses the token (expired)."""
    credentials = await asyncio.to_thread(load_credentials)
    token = await credentials.current_token()
    expires = credentials.token_expires()
    return kopf.ConnectionInfo(
        server=credentials.server,
        ca_data=credentials.ca_pem,
        insecure=credentials.insecure or None,
        certificate_data=credentials.client_certificate,
        private_key_data=credentials.client_key,
        token=token,
        username=credentials.username,
        password=credentials.password,
        expiration=datetime.datetime.fromtimestamp(expires, datetime.timezone.utc) if expires else None,
    )
