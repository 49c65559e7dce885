"""The auth part of the metadata-slot contract: tenants, users, tokens by hash, tenant scoping."""

from __future__ import annotations

import hashlib

import pytest

from matih_lite.contracts.auth import AuthStore, Credential
from matih_lite.errors import Conflict, NotFound

T = "tenant-a"
OTHER = "tenant-b"
NOW = 1_700_000_000_000


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class AuthStoreContract:
    """Override the ``store`` fixture to return a fresh, empty metadata backend."""

    @pytest.fixture
    def store(self):
        raise NotImplementedError("override the 'store' fixture to build your backend")

    def with_user(self, store, tenant=T, name="alice", roles=("editor",)):
        try:
            store.create_tenant(tenant, created_at=NOW)
        except Conflict:
            pass
        return store.create_user(tenant, name, roles=roles, created_at=NOW)

    def with_token(self, store, tenant=T, user="alice", token_id="tok_1", secret="mth_secret-1", **kw):
        return store.create_token(tenant, user, token_id=token_id, token_hash=digest(secret), created_at=NOW, **kw)

    # tenants ------------------------------------------------------------------------------------
    def test_auth_store_satisfies_protocol(self, store):
        assert isinstance(store, AuthStore)

    def test_tenant_names_are_unique(self, store):
        made = store.create_tenant(T, created_at=NOW, description="first")
        assert store.get_tenant(T) == made and made.description == "first"
        with pytest.raises(Conflict):
            store.create_tenant(T, created_at=NOW)
        store.create_tenant(OTHER, created_at=NOW)
        assert [t.name for t in store.list_tenants()] == [T, OTHER]
        with pytest.raises(NotFound):
            store.get_tenant("nobody")

    # users --------------------------------------------------------------------------------------
    def test_create_get_and_list_users(self, store):
        alice = self.with_user(store, roles=("editor", "lead"))
        assert alice.roles == ("editor", "lead") and not alice.disabled and alice.created_at == NOW
        assert store.get_user(T, "alice") == alice
        self.with_user(store, name="bob", roles=("viewer",))
        assert [u.name for u in store.list_users(T)] == ["alice", "bob"]

    def test_user_names_are_unique_per_tenant(self, store):
        self.with_user(store)
        with pytest.raises(Conflict):
            store.create_user(T, "alice", roles=("viewer",), created_at=NOW)
        other = self.with_user(store, tenant=OTHER)
        assert other.tenant == OTHER
        assert len(store.list_users(T)) == 1

    def test_user_needs_an_existing_tenant(self, store):
        with pytest.raises(NotFound):
            store.create_user("nowhere", "alice", roles=("viewer",), created_at=NOW)

    def test_users_are_scoped_by_tenant(self, store):
        self.with_user(store)
        store.create_tenant(OTHER, created_at=NOW)
        with pytest.raises(NotFound):
            store.get_user(OTHER, "alice")
        with pytest.raises(NotFound):
            store.update_user(OTHER, "alice", disabled=True)
        assert store.list_users(OTHER) == []
        assert store.list_users("nowhere") == []

    def test_update_roles_and_disable(self, store):
        self.with_user(store)
        assert store.update_user(T, "alice", roles=("viewer",)).roles == ("viewer",)
        user = store.update_user(T, "alice", disabled=True)
        assert user.disabled and user.roles == ("viewer",)
        assert not store.update_user(T, "alice", disabled=False).disabled
        with pytest.raises(NotFound):
            store.update_user(T, "ghost", disabled=True)

    # tokens -------------------------------------------------------------------------------------
    def test_token_is_found_by_hash_with_its_user(self, store):
        self.with_user(store, roles=("editor",))
        token = self.with_token(store, name="laptop", description="d", expires_at=NOW + 1000)
        assert token.token_id == "tok_1" and token.user == "alice" and token.name == "laptop"
        assert token.expires_at == NOW + 1000 and token.last_used_at is None and not token.revoked
        found = store.find_token(digest("mth_secret-1"))
        assert isinstance(found, Credential)
        assert found.token == token
        assert found.user.name == "alice" and found.user.tenant == T and found.user.roles == ("editor",)
        assert store.find_token(digest("mth_other")) is None

    def test_found_token_reflects_revocation_and_disabled_user(self, store):
        self.with_user(store)
        self.with_token(store)
        store.update_user(T, "alice", disabled=True)
        assert store.find_token(digest("mth_secret-1")).user.disabled
        revoked = store.revoke_token(T, "tok_1")
        assert revoked.revoked
        assert store.revoke_token(T, "tok_1").revoked  # twice is harmless
        assert store.find_token(digest("mth_secret-1")).token.revoked

    def test_token_needs_an_existing_user_of_the_tenant(self, store):
        self.with_user(store)
        store.create_tenant(OTHER, created_at=NOW)
        with pytest.raises(NotFound):
            self.with_token(store, user="ghost")
        with pytest.raises(NotFound):
            self.with_token(store, tenant=OTHER, user="alice")

    def test_token_ids_and_hashes_are_unique(self, store):
        self.with_user(store)
        self.with_token(store)
        with pytest.raises(Conflict):
            self.with_token(store, secret="mth_secret-2")
        with pytest.raises(Conflict):
            self.with_token(store, token_id="tok_2")

    def test_tokens_are_scoped_by_tenant(self, store):
        self.with_user(store)
        self.with_user(store, tenant=OTHER, name="mallory")
        self.with_token(store)
        with pytest.raises(NotFound):
            store.get_token(OTHER, "tok_1")
        with pytest.raises(NotFound):
            store.revoke_token(OTHER, "tok_1")
        assert store.list_tokens(OTHER) == []
        assert not store.get_token(T, "tok_1").revoked

    def test_list_tokens_newest_first_and_by_user(self, store):
        self.with_user(store)
        self.with_user(store, name="bob")
        store.create_token(T, "alice", token_id="tok_a", token_hash=digest("a"), created_at=NOW)
        store.create_token(T, "bob", token_id="tok_b", token_hash=digest("b"), created_at=NOW + 1)
        store.revoke_token(T, "tok_a")
        assert [t.token_id for t in store.list_tokens(T)] == ["tok_b", "tok_a"]
        assert [t.token_id for t in store.list_tokens(T, user="alice")] == ["tok_a"]

    def test_touch_records_last_use(self, store):
        self.with_user(store)
        self.with_token(store)
        store.touch_token("tok_1", NOW + 5000)
        assert store.get_token(T, "tok_1").last_used_at == NOW + 5000
        store.touch_token("tok_unknown", NOW)  # ignored

    def test_no_secret_is_stored(self, store):
        """Nothing the store returns carries the secret; only its hash was ever given."""
        self.with_user(store)
        self.with_token(store, secret="mth_do-not-keep-me")
        found = store.find_token(digest("mth_do-not-keep-me"))
        assert "mth_do-not-keep-me" not in repr(found) and "mth_do-not-keep-me" not in repr(store.list_tokens(T))
