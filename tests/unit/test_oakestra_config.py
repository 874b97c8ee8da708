"""Driver configuration, token lifetimes and Oakestra's body encodings."""

import base64
import json

import pytest

from flops_operator.platforms.oakestra import ConfigError, OakestraConfig
from flops_operator.platforms.oakestra.auth import Token, lifetime, token_refused
from flops_operator.platforms.oakestra.client import decode


def test_from_env_reads_the_documented_variables_and_hides_the_password():
    env = {"FLOPS_OAKESTRA_URL": "http://root:10000/", "FLOPS_OAKESTRA_USERNAME": "ops",
           "FLOPS_OAKESTRA_PASSWORD": "hunter2", "FLOPS_OAKESTRA_ORGANIZATION": "lab",
           "FLOPS_OAKESTRA_MAX_IN_FLIGHT": "8", "FLOPS_OAKESTRA_REQUEST_TIMEOUT": "2.5"}
    config = OakestraConfig.from_env(env)
    assert (config.url, config.username, config.password, config.organization) == \
        ("http://root:10000", "ops", "hunter2", "lab")
    assert (config.max_in_flight, config.request_timeout) == (8, 2.5)
    assert "hunter2" not in repr(config)


def test_from_secret_data_decodes_base64_and_accepts_string_data():
    data = {k: base64.b64encode(v.encode()).decode() for k, v in
            {"url": "http://root:10000", "username": "Admin", "password": "pw"}.items()}
    assert OakestraConfig.from_mapping(data, base64_values=True).password == "pw"
    assert OakestraConfig.from_mapping({"url": "http://x", "password": "pw"}).username == "Admin"
    with pytest.raises(ConfigError):
        OakestraConfig.from_mapping({"url": "http://x", "password": "%%%"}, base64_values=True)


@pytest.mark.parametrize("env", [{}, {"FLOPS_OAKESTRA_URL": "root:10000", "FLOPS_OAKESTRA_PASSWORD": "p"},
                                 {"FLOPS_OAKESTRA_URL": "http://r"},
                                 {"FLOPS_OAKESTRA_URL": "http://r", "FLOPS_OAKESTRA_PASSWORD": "p",
                                  "FLOPS_OAKESTRA_RETRIES": "many"}])
def test_bad_configuration_is_refused_with_a_reason(env):
    with pytest.raises(ConfigError):
        OakestraConfig.from_env(env)


def jwt(claims):
    part = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    return f"e30.{part}.sig"


def test_token_lifetime_comes_from_the_jwt_and_drives_refresh():
    assert lifetime(jwt({"iat": 100, "exp": 700})) == 600
    assert lifetime("not-a-jwt") == 600
    token = Token.issued(jwt({"iat": 0, "exp": 600}), jwt({"iat": 0, "exp": 2592000}), now=1000)
    assert token.usable(1500, margin=60) and not token.usable(1541, margin=60)
    assert token.refreshable(1541, margin=60)


def test_decode_handles_double_encoding_and_html_json():
    assert decode(json.dumps(json.dumps([{"a": 1}]))) == [{"a": 1}]
    assert decode('{"_id": {"$oid": "x"}}') == {"_id": {"$oid": "x"}}
    assert decode("null") is None and decode("") is None and decode("plain text") == "plain text"


def test_image_registry_moves_only_the_plans_own_images():
    from flops_operator.plan import images

    config = OakestraConfig.from_mapping({"url": "http://x", "password": "pw",
                                          "imageRegistry": "registry.example.com/flops/"})
    assert config.image(images.AGGREGATOR) == f"registry.example.com/flops/aggregator:{images.IMAGE_VERSION}"
    assert config.image("docker.io/me/task:1") == "docker.io/me/task:1"
    assert OakestraConfig(url="http://x", password="pw").image(images.LEARNER) == images.LEARNER


def test_service_subnet_and_readiness_settings_are_checked():
    env = {"FLOPS_OAKESTRA_URL": "http://x", "FLOPS_OAKESTRA_PASSWORD": "pw",
           "FLOPS_OAKESTRA_SERVICE_SUBNET": "10.30.7.0/24", "FLOPS_OAKESTRA_HEALTH_CHECKS": "false",
           "FLOPS_OAKESTRA_READY_AFTER": "2.5"}
    config = OakestraConfig.from_env(env)
    assert (config.service_subnet, config.health_checks, config.ready_after) == ("10.30.7.0/24", False, 2.5)
    with pytest.raises(ConfigError, match="not an IPv4 network"):
        OakestraConfig.from_env({**env, "FLOPS_OAKESTRA_SERVICE_SUBNET": "10.30.7.0/33"})
    with pytest.raises(ConfigError, match="true/false"):
        OakestraConfig.from_env({**env, "FLOPS_OAKESTRA_HEALTH_CHECKS": "perhaps"})


def test_round_robin_candidates_stay_inside_the_service_subnet():
    from itertools import islice

    from flops_operator.platforms.oakestra import names

    small = list(islice(names.rr_ip_candidates("uid", "aggregator", "10.30.7.0/24"), 200))
    assert all(ip.startswith("10.30.7.") and ip not in ("10.30.7.0", "10.30.7.255") for ip in small)
    assert len(set(small)) > 100
    default = list(islice(names.rr_ip_candidates("uid", "aggregator"), 200))
    assert all(64 <= int(ip.split(".")[2]) <= 255 and names.valid_rr_ip(ip) for ip in default)


@pytest.mark.parametrize("status, body, refused", [
    (401, {"message": "Missing authentication token"}, True),  # jwt_auth routes, any token trouble
    (401, {"msg": "Token has expired"}, True),
    (422, {"msg": "Signature verification failed"}, True),  # the SM's key changed (restart)
    (422, {"msg": "Only non-refresh tokens are allowed"}, True),
    (422, {"code": 422, "status": "Unprocessable Entity", "errors": {"json": {}}}, False),  # an invalid SLA
    (422, "Signature verification failed", False),
    (403, {"message": "You have not enough permissions!"}, False),
    (200, {"msg": "ok"}, False),
])
def test_token_refused_tells_a_refused_token_from_a_refused_request(status, body, refused):
    assert token_refused(status, body) is refused
