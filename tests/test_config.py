"""Unit tests for shipkit.config: NatsConfig parsing and secrecy, stream/bucket defaults, to_nats() and drift()."""

from __future__ import annotations

from pathlib import Path

import pytest
from nats.js import api
from pydantic import ValidationError

from shipkit.config import (
    DEFAULT_NATS_URL,
    KvBucketConfig,
    NatsConfig,
    ObjectStoreConfig,
    StreamConfig,
    default_nats_url,
)
from shipkit.errors import InvalidNameError

DAY_S = 24 * 3600.0
SECRET = "hunter2-very-secret"


@pytest.fixture(autouse=True)
def _no_nats_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test starts without the URL variables, whatever the shell exports."""
    monkeypatch.delenv("SHIPKIT_NATS_URL", raising=False)
    monkeypatch.delenv("NATS_URL", raising=False)


# -- NatsConfig: servers -------------------------------------------------------------------------------


def test_default_url_is_localhost() -> None:
    """Without environment variables the default server is nats://localhost:4222."""
    assert DEFAULT_NATS_URL == "nats://localhost:4222"
    assert NatsConfig().servers == [DEFAULT_NATS_URL]
    assert NatsConfig().url == DEFAULT_NATS_URL


def test_env_precedence_shipkit_over_nats_url(monkeypatch: pytest.MonkeyPatch) -> None:
    """SHIPKIT_NATS_URL wins over NATS_URL, which wins over the built-in default."""
    monkeypatch.setenv("NATS_URL", "nats://from-nats-url:1")
    assert default_nats_url() == "nats://from-nats-url:1"
    assert NatsConfig().url == "nats://from-nats-url:1"
    monkeypatch.setenv("SHIPKIT_NATS_URL", "nats://from-shipkit:2")
    assert default_nats_url() == "nats://from-shipkit:2"
    assert NatsConfig().url == "nats://from-shipkit:2"
    assert NatsConfig.from_url().url == "nats://from-shipkit:2"


def test_empty_env_var_falls_through(monkeypatch: pytest.MonkeyPatch) -> None:
    """An empty SHIPKIT_NATS_URL is ignored rather than used as a URL."""
    monkeypatch.setenv("SHIPKIT_NATS_URL", "")
    monkeypatch.setenv("NATS_URL", "nats://fallback:3")
    assert NatsConfig().url == "nats://fallback:3"


def test_env_comma_separated_list(monkeypatch: pytest.MonkeyPatch) -> None:
    """A comma-separated environment URL becomes several servers."""
    monkeypatch.setenv("SHIPKIT_NATS_URL", "nats://a:1, nats://b:2")
    assert NatsConfig.from_url().servers == ["nats://a:1", "nats://b:2"]
    assert NatsConfig().servers == ["nats://a:1", "nats://b:2"]


def test_explicit_url_beats_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """An explicit url or servers value is used even when the environment sets one."""
    monkeypatch.setenv("SHIPKIT_NATS_URL", "nats://env:1")
    assert NatsConfig(url="nats://explicit:2").servers == ["nats://explicit:2"]
    assert NatsConfig(servers=["nats://explicit:3"]).servers == ["nats://explicit:3"]
    assert NatsConfig.from_url("nats://explicit:4").servers == ["nats://explicit:4"]


@pytest.mark.parametrize(
    ("kwargs", "servers"),
    [
        ({"url": "nats://h:4222"}, ["nats://h:4222"]),
        ({"url": "nats://a:1,nats://b:2 , nats://c:3"}, ["nats://a:1", "nats://b:2", "nats://c:3"]),
        ({"servers": "nats://a:1,nats://b:2"}, ["nats://a:1", "nats://b:2"]),
        ({"servers": ["nats://a:1", "tls://b:2"]}, ["nats://a:1", "tls://b:2"]),
        ({"url": None}, [DEFAULT_NATS_URL]),
    ],
)
def test_url_and_servers_parsing(kwargs: dict[str, object], servers: list[str]) -> None:
    """`url` and `servers` accept one URL, a comma-separated string or a list; url=None means the default."""
    config = NatsConfig(**kwargs)  # type: ignore[arg-type]
    assert config.servers == servers
    assert config.url == servers[0]


@pytest.mark.parametrize("kwargs", [{"servers": []}, {"servers": ""}, {"url": " , "}])
def test_no_server_is_an_error(kwargs: dict[str, object]) -> None:
    """An empty server list is refused at construction."""
    with pytest.raises(ValidationError, match="at least one server"):
        NatsConfig(**kwargs)  # type: ignore[arg-type]


def test_unknown_option_and_bad_values_are_refused() -> None:
    """Misspelled options and non-positive timeouts are refused; the config is frozen."""
    with pytest.raises(ValidationError, match="request_timout_s"):
        NatsConfig(request_timout_s=1)  # type: ignore[call-arg]
    with pytest.raises(ValidationError, match="connect_timeout_s"):
        NatsConfig(connect_timeout_s=0)
    config = NatsConfig()
    with pytest.raises(ValidationError):
        config.name = "x"  # type: ignore[misc]


def test_reconnect_defaults_suit_long_running_services() -> None:
    """By default a connection reconnects forever, waiting 2 s between attempts."""
    config = NatsConfig()
    assert config.allow_reconnect is True
    assert config.max_reconnect_attempts == -1
    assert config.reconnect_time_wait_s == 0.5
    assert config.request_timeout_s == 10.0


# -- NatsConfig: secrets -------------------------------------------------------------------------------


def test_password_and_token_never_in_repr_str_or_dump() -> None:
    """password and token are hidden in repr, str and JSON dumps, but available on purpose."""
    config = NatsConfig(user="u", password=SECRET, token=SECRET + "-tok")
    for text in (repr(config), str(config), config.model_dump_json(), repr(config.model_dump())):
        assert SECRET not in text
    assert config.password is not None
    assert config.password.get_secret_value() == SECRET
    assert config.token is not None
    assert config.token.get_secret_value() == SECRET + "-tok"
    assert "user='u'" in repr(config)


def test_url_credentials_move_out_of_the_url() -> None:
    """Credentials embedded in server URLs become user/password, so no repr or dump carries them."""
    config = NatsConfig(url=f"nats://alice:{SECRET}@h:1,nats://alice:{SECRET}@h2:2,nats://h3:3")
    for text in (repr(config), str(config), config.model_dump_json(), repr(config.model_dump())):
        assert SECRET not in text
    assert config.servers == ["nats://h:1", "nats://h2:2", "nats://h3:3"]
    assert config.user == "alice"
    assert config.password is not None and config.password.get_secret_value() == SECRET


def test_percent_encoded_url_credentials_are_decoded() -> None:
    """``s3cr%3Aet%40x`` in a URL is the password ``s3cr:et@x``; a lone userinfo is a token."""
    config = NatsConfig.from_url("nats://us%40r:s3cr%3Aet%40x@h:4222")
    assert (config.user, config.password and config.password.get_secret_value()) == ("us@r", "s3cr:et@x")
    token = NatsConfig.from_url("nats://t%2Fok@h:4222").token
    assert token is not None and token.get_secret_value() == "t/ok"


@pytest.mark.parametrize(
    "kwargs",
    [
        {"servers": f"nats://a:{SECRET}@h:1,nats://b:{SECRET}@h:2"},
        {"servers": f"nats://a:{SECRET}@h:1", "password": "other"},
    ],
)
def test_conflicting_url_credentials_are_refused_without_quoting_them(kwargs: dict[str, str]) -> None:
    """Two different credential sets (URLs, or URL and option) are an error that names no secret."""
    with pytest.raises(ValidationError) as info:
        NatsConfig(**kwargs)  # type: ignore[arg-type]
    assert SECRET not in str(info.value)
    assert "credentials" in str(info.value) or "different values" in str(info.value)


def test_validation_errors_do_not_quote_secrets() -> None:
    """A validation error on a config holding a password does not echo the password."""
    with pytest.raises(ValidationError) as info:
        NatsConfig(password=SECRET, tls_cert_file=Path("cert.pem"))
    assert SECRET not in str(info.value)


# -- NatsConfig: TLS -----------------------------------------------------------------------------------


@pytest.mark.parametrize("kwargs", [{"tls_cert_file": "c.pem"}, {"tls_key_file": "k.pem"}])
def test_tls_cert_and_key_must_come_together(kwargs: dict[str, str]) -> None:
    """A client certificate without its key (or the reverse) is refused."""
    with pytest.raises(ValidationError, match="together"):
        NatsConfig(**kwargs)  # type: ignore[arg-type]


def test_tls_options() -> None:
    """A full TLS pair is accepted, paths become Paths, and uses_tls reflects TLS options and tls:// URLs."""
    config = NatsConfig(tls_cert_file="c.pem", tls_key_file="k.pem", tls_ca_file="ca.pem")  # type: ignore[arg-type]
    assert config.tls_cert_file == Path("c.pem")
    assert config.uses_tls
    assert NatsConfig(url="tls://h:4222").uses_tls
    assert NatsConfig(tls_ca_file=Path("ca.pem")).uses_tls
    assert not NatsConfig(url="nats://h:4222").uses_tls


# -- StreamConfig --------------------------------------------------------------------------------------


def test_stream_defaults_equal_the_event_bus_contract() -> None:
    """The default stream is SHIP_EVENTS on ship.events.>, 24 h, 100 000 messages, file storage."""
    for config in (StreamConfig(), StreamConfig.event_bus()):
        assert config.name == "SHIP_EVENTS"
        assert config.subjects == ["ship.events.>"]
        assert config.max_age_s == DAY_S
        assert config.max_msgs == 100_000
        assert config.storage == "file"
        assert config.retention == "limits"
        assert config.replicas == 1


def test_channels_stream_equals_the_contract() -> None:
    """The channels stream is CHANNELS on ship.channel.>, 30 days, 10 000 messages, file storage."""
    config = StreamConfig.channels()
    assert config.name == "CHANNELS"
    assert config.subjects == ["ship.channel.>"]
    assert config.max_age_s == 30 * DAY_S
    assert config.max_msgs == 10_000
    assert config.storage == "file"


def test_event_bus_custom_name_and_prefix_and_new() -> None:
    """event_bus() takes a custom name and prefix; new() takes a subject or a list with default limits."""
    custom = StreamConfig.event_bus("ORDERS", "orders.events")
    assert (custom.name, custom.subjects) == ("ORDERS", ["orders.events.>"])
    assert StreamConfig.new("X", "x.>").subjects == ["x.>"]
    assert StreamConfig.new("X", ["x.a", "x.b"]).max_msgs == 100_000


def test_stream_with_helpers_return_modified_copies() -> None:
    """with_* helpers return a changed copy and leave the original as it was."""
    base = StreamConfig.event_bus()
    changed = base.with_max_age(3600).with_max_msgs(5).with_memory_storage().with_replicas(3)
    assert (changed.max_age_s, changed.max_msgs, changed.storage, changed.replicas) == (3600, 5, "memory", 3)
    assert (base.max_age_s, base.max_msgs, base.storage, base.replicas) == (DAY_S, 100_000, "file", 1)


@pytest.mark.parametrize(
    "kwargs",
    [{"name": "A.B"}, {"name": ""}, {"name": "A B"}, {"subjects": []}, {"subjects": ["a..b"]}, {"subjects": ["a.>.b"]}],
)
def test_stream_names_and_subjects_are_validated(kwargs: dict[str, object]) -> None:
    """Invalid stream names and subjects are refused when the config is built."""
    with pytest.raises(ValueError, match=r"."):
        StreamConfig(**kwargs)  # type: ignore[arg-type]


def test_stream_to_nats_carries_every_limit() -> None:
    """to_nats() builds a nats-py StreamConfig with the declared limits (max_age in seconds -> ns on the wire)."""
    declared = StreamConfig.event_bus().with_max_msgs(42)
    nats_config = declared.to_nats()
    assert isinstance(nats_config, api.StreamConfig)
    assert nats_config.name == "SHIP_EVENTS"
    assert nats_config.subjects == ["ship.events.>"]
    assert nats_config.max_msgs == 42
    assert nats_config.storage == api.StorageType.FILE
    assert nats_config.retention == api.RetentionPolicy.LIMITS
    assert nats_config.discard == api.DiscardPolicy.OLD
    assert nats_config.num_replicas == 1
    wire = nats_config.as_dict()
    assert wire["max_age"] == 24 * 3600 * 10**9
    assert wire["duplicate_window"] == 120 * 10**9


def test_stream_to_nats_unlimited_age_is_zero() -> None:
    """A max_age of 0 means unlimited and is sent as 0."""
    assert StreamConfig(max_age_s=0).to_nats().as_dict()["max_age"] == 0


def test_stream_drift_none_against_itself() -> None:
    """A declaration compared with its own nats-py config reports no drift."""
    declared = StreamConfig.channels()
    assert declared.drift(declared.to_nats()) == {}


def test_stream_drift_lists_each_differing_field() -> None:
    """drift() reports each differing field as (declared, actual), enums as their values."""
    declared = StreamConfig.event_bus()
    existing = StreamConfig(subjects=["ship.events.>", "extra.>"], max_msgs=5, storage="memory", max_age_s=60).to_nats()
    diff = declared.drift(existing)
    assert diff == {
        "subjects": (["ship.events.>"], ["extra.>", "ship.events.>"]),
        "max_msgs": (100_000, 5),
        "storage": ("file", "memory"),
        "max_age": (DAY_S, 60.0),
    }


def test_stream_drift_ignores_subject_order_and_server_duplicate_window() -> None:
    """Subject order and a server-chosen duplicate window are not drift; an explicit window is."""
    declared = StreamConfig(subjects=["a.>", "b.>"])
    existing = StreamConfig(subjects=["b.>", "a.>"], duplicate_window_s=300).to_nats()
    assert declared.drift(existing) == {}
    explicit = StreamConfig(subjects=["a.>", "b.>"], duplicate_window_s=60)
    assert explicit.drift(existing) == {"duplicate_window": (60.0, 300.0)}


# -- KvBucketConfig / ObjectStoreConfig ----------------------------------------------------------------


def test_kv_defaults_equal_the_seed() -> None:
    """A KV bucket keeps 5 revisions, has no TTL and is stored in files by default."""
    config = KvBucketConfig.new("ship_config")
    assert (config.bucket, config.history, config.ttl_s, config.storage, config.replicas) == (
        "ship_config",
        5,
        None,
        "file",
        1,
    )


def test_kv_with_helpers_and_to_nats() -> None:
    """with_history/with_ttl_secs change a copy, and to_nats() carries history and TTL."""
    config = KvBucketConfig.new("beings_status").with_history(10).with_ttl_secs(300)
    assert KvBucketConfig.new("x").with_ttl_secs(120).ttl_s == 120
    nats_config = config.to_nats()
    assert isinstance(nats_config, api.KeyValueConfig)
    assert (nats_config.bucket, nats_config.history, nats_config.ttl) == ("beings_status", 10, 300.0)
    assert nats_config.storage == api.StorageType.FILE
    assert KvBucketConfig.new("x").to_nats().ttl is None


@pytest.mark.parametrize(
    "kwargs", [{"bucket": "a.b"}, {"bucket": ""}, {"bucket": "x", "history": 0}, {"bucket": "x", "history": 65}]
)
def test_kv_config_is_validated(kwargs: dict[str, object]) -> None:
    """Bucket names outside [A-Za-z0-9_-] and history outside 1..64 are refused."""
    with pytest.raises(ValueError, match=r"."):
        KvBucketConfig(**kwargs)  # type: ignore[arg-type]


def test_kv_bucket_name_error_is_invalid_name() -> None:
    """The bucket validator's InvalidNameError message reaches the caller."""
    with pytest.raises(ValidationError, match="must match"):
        KvBucketConfig(bucket="bad name")
    assert issubclass(InvalidNameError, ValueError)


def test_kv_drift_against_backing_stream() -> None:
    """KV drift compares history, TTL, storage and replicas with the backing stream's config."""
    declared = KvBucketConfig.new("beings_status").with_ttl_secs(300)
    same = api.StreamConfig(max_msgs_per_subject=5, max_age=300.0, storage=api.StorageType.FILE, num_replicas=1)
    assert declared.drift(same) == {}
    other = api.StreamConfig(max_msgs_per_subject=1, max_age=None, storage=api.StorageType.MEMORY, num_replicas=1)
    assert declared.drift(other) == {"history": (5, 1), "ttl_s": (300.0, 0.0), "storage": ("file", "memory")}


def test_object_store_config_defaults_to_nats_and_drift() -> None:
    """An object bucket defaults to file storage; to_nats() and drift() reflect storage and replicas."""
    config = ObjectStoreConfig(bucket="snapshots")
    assert (config.storage, config.replicas, config.ttl_s) == ("file", 1, None)
    nats_config = config.to_nats()
    assert isinstance(nats_config, api.ObjectStoreConfig)
    assert nats_config.bucket == "snapshots"
    existing = api.StreamConfig(storage=api.StorageType.MEMORY, num_replicas=1)
    assert config.drift(existing) == {"storage": ("file", "memory")}
    with pytest.raises(ValueError, match="must match"):
        ObjectStoreConfig(bucket="snap.shots")
