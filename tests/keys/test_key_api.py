"""Issue 17, point 1: the key API (admin key required) in the embedded default (SQLite).

A key is returned once and stored as its SHA-256 digest; list, update, revoke and rotate
act at once on the replica that made the change; keys in the config file keep working.
"""

from __future__ import annotations

import sqlite3

from nearline.config import hash_api_key
from nearline.gateway.keys.manager import store_path
from nearline.testing import http

from .conftest import ADMIN_AUTH, admin_auth, chat, create_key

CONFIG_KEY = "sk-from-yaml"


def test_a_created_key_chats_as_its_tenant_and_only_its_digest_is_stored(make_gateway):
    gateway = make_gateway(auth=admin_auth())
    assert chat(gateway.url, None).status_code == 200  # no key anywhere yet: auth is off
    made = create_key(gateway.url, "acme", name="ci", models=["m"], rpm=100)
    secret = made["key"]
    assert secret.startswith("sk-nl-")
    assert made["tenant"] == "acme"
    assert made["models"] == ["m"]
    assert made["rpm"] == 100
    assert made["hint"] == secret[-4:]
    answered = chat(gateway.url, secret)
    assert answered.status_code == 200, answered.text
    assert chat(gateway.url, None).status_code == 401  # a key exists: auth is on now

    with sqlite3.connect(store_path(gateway.settings)) as db:
        rows = db.execute("SELECT sha256, hint FROM nearline_keys").fetchall()
    assert rows == [(hash_api_key(secret), secret[-4:])]
    listed = http.get(f"{gateway.url}/admin/keys", headers=ADMIN_AUTH, timeout=5).json()
    assert [k["id"] for k in listed["data"]] == [made["id"]]
    assert "key" not in listed["data"][0]  # shown once, at creation
    assert "sha256" not in listed["data"][0]


def test_update_revoke_and_rotate_take_effect_at_once(make_gateway):
    gateway = make_gateway(auth=admin_auth())
    made = create_key(gateway.url, "acme")
    url = f"{gateway.url}/admin/keys/{made['id']}"

    updated = http.patch(url, json={"models": ["other"], "tpm": 500}, headers=ADMIN_AUTH)
    assert updated.status_code == 200, updated.text
    assert updated.json()["models"] == ["other"]
    assert updated.json()["tpm"] == 500
    assert chat(gateway.url, made["key"]).status_code == 403  # may no longer use m
    cleared = http.patch(url, json={"models": None, "tpm": None}, headers=ADMIN_AUTH).json()
    assert cleared["models"] is None
    assert cleared["tpm"] is None
    assert chat(gateway.url, made["key"]).status_code == 200

    rotated = http.post(f"{url}/rotate", headers=ADMIN_AUTH, timeout=5)
    assert rotated.status_code == 200, rotated.text
    new_secret = rotated.json()["key"]
    assert new_secret != made["key"]
    assert rotated.json()["id"] == made["id"]
    assert chat(gateway.url, made["key"]).status_code == 401
    assert chat(gateway.url, new_secret).status_code == 200

    revoked = http.delete(url, headers=ADMIN_AUTH, timeout=5)
    assert revoked.status_code == 200
    assert revoked.json()["revoked_at"] is not None
    assert chat(gateway.url, new_secret).status_code == 401
    assert http.post(f"{url}/rotate", headers=ADMIN_AUTH).status_code == 400
    assert http.get(f"{gateway.url}/admin/keys/key-nope", headers=ADMIN_AUTH).status_code == 404


def test_the_key_api_always_needs_an_admin_key(make_gateway):
    open_gateway = make_gateway()  # auth off on loopback: purge is open, the key API is not
    refused = http.post(f"{open_gateway.url}/admin/keys", json={"tenant": "t"}, timeout=5)
    assert refused.status_code == 401
    assert "auth.admin_keys" in refused.json()["error"]["message"]
    gateway = make_gateway(auth=admin_auth())
    made = create_key(gateway.url)
    for headers in ({}, {"Authorization": f"Bearer {made['key']}"}):  # a tenant key is no admin
        assert http.get(f"{gateway.url}/admin/keys", headers=headers).status_code == 401
    bad = http.post(f"{gateway.url}/admin/keys", json={"tenant": "t", "rpm": 0}, headers=ADMIN_AUTH)
    assert bad.status_code == 400


def test_config_file_keys_keep_working_beside_stored_keys(make_gateway):
    gateway = make_gateway(
        auth=admin_auth(keys=[{"sha256": hash_api_key(CONFIG_KEY), "tenant": "yaml", "rpm": 5}])
    )
    made = create_key(gateway.url, "api")
    assert chat(gateway.url, CONFIG_KEY).status_code == 200
    assert chat(gateway.url, made["key"]).status_code == 200
    listed = http.get(f"{gateway.url}/admin/keys", headers=ADMIN_AUTH, timeout=5).json()["data"]
    assert [(k["tenant"], k["source"]) for k in listed] == [("yaml", "config"), ("api", "api")]
    assert listed[0]["rpm"] == 5
    in_file = http.delete(f"{gateway.url}/admin/keys/{listed[0]['id']}", headers=ADMIN_AUTH)
    assert in_file.status_code == 409
    assert chat(gateway.url, CONFIG_KEY).status_code == 200
