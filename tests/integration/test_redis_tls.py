"""Redis over TLS (infergate_redis ... tls=on): nginx's OpenSSL layer on
the module's own connection.  A CA and certificates are made with openssl
for each test; redis-server listens on a TLS port only (port 0).  The
server certificate is verified by default (chain and name); client
certificates give mTLS; a wrong CA or a wrong name is refused with a clear
error-log line and the cache bypasses."""

import time

import pytest
import requests

from redis_fixtures import (make_pki, redis_factory,  # noqa: F401
                            store_origin)
from test_redis import cache_conf, wait_status


@pytest.fixture
def pki(tmp_path):
    return make_pki(tmp_path / "pki")


def tls_redis(redis_factory, pki, auth_clients="no"):
    return redis_factory(tls={
        "cert": pki.server[0], "key": pki.server[1], "ca": pki.ca[0],
        "auth_clients": auth_clients,
        "client_cert": pki.client[0], "client_key": pki.client[1]})


def assert_bypasses(ngx, origin, path, n=4):
    for _ in range(n):
        r = requests.get(ngx.url(path), timeout=5)
        assert r.status_code == 200
        assert r.headers["X-Cache-Status"] == "BYPASS", r.headers
        time.sleep(0.1)
    assert origin.count("GET", path) == n


def test_tls_verified_by_ip_miss_then_hit(start_nginx, redis_factory, pki,
                                         store_origin):
    srv = tls_redis(redis_factory, pki)
    http, server = cache_conf(srv, store_origin,
                              f"tls=on tls_ca={pki.ca[0]}")
    ngx = start_nginx(http=http, server=server, workers=2)
    wait_status(ngx, "/warm", ("MISS", "HIT"))
    r1 = requests.get(ngx.url("/t"))
    r2 = requests.get(ngx.url("/t"))
    assert r1.headers["X-Cache-Status"] == "MISS"
    assert r2.headers["X-Cache-Status"] == "HIT", r2.headers
    assert r2.content == r1.content
    assert store_origin.count("GET", "/t") == 1
    # the server has no cleartext port: the entries came over TLS
    assert srv.client().keys("igc:*")


def test_tls_server_name_and_mtls(start_nginx, redis_factory, pki,
                                  store_origin):
    srv = tls_redis(redis_factory, pki, auth_clients="yes")
    http, server = cache_conf(
        srv, store_origin,
        f"tls=on tls_ca={pki.ca[0]} tls_server_name=redis.test "
        f"tls_cert={pki.client[0]} tls_key={pki.client[1]}")
    ngx = start_nginx(http=http, server=server, workers=1)
    wait_status(ngx, "/warm", ("MISS", "HIT"))
    requests.get(ngx.url("/m"))
    r = requests.get(ngx.url("/m"))
    assert r.headers["X-Cache-Status"] == "HIT"
    assert store_origin.count("GET", "/m") == 1


def test_mtls_required_without_client_cert_bypasses(start_nginx,
                                                    redis_factory, pki,
                                                    store_origin):
    srv = tls_redis(redis_factory, pki, auth_clients="yes")
    http, server = cache_conf(srv, store_origin,
                              f"tls=on tls_ca={pki.ca[0]}")
    ngx = start_nginx(http=http, server=server, workers=1)
    time.sleep(0.3)
    assert_bypasses(ngx, store_origin, "/nc")
    assert not srv.client().keys("ig*")


def test_wrong_ca_is_refused(start_nginx, redis_factory, pki, store_origin):
    srv = tls_redis(redis_factory, pki)
    http, server = cache_conf(srv, store_origin,
                              f"tls=on tls_ca={pki.other_ca[0]}")
    ngx = start_nginx(http=http, server=server, workers=1)
    time.sleep(0.3)
    assert_bypasses(ngx, store_origin, "/ca")
    assert not srv.client().keys("ig*")
    log = ngx.error_log
    assert "TLS certificate verify error" in log, log[-2000:]
    assert 'infergate_redis "r"' in log


def test_wrong_name_is_refused(start_nginx, redis_factory, pki,
                               store_origin):
    srv = tls_redis(redis_factory, pki)
    http, server = cache_conf(
        srv, store_origin,
        f"tls=on tls_ca={pki.ca[0]} tls_server_name=other.test")
    ngx = start_nginx(http=http, server=server, workers=1)
    time.sleep(0.3)
    assert_bypasses(ngx, store_origin, "/nm")
    assert not srv.client().keys("ig*")
    assert 'does not match "other.test"' in ngx.error_log


def test_verify_off_accepts_unknown_ca(start_nginx, redis_factory, pki,
                                       store_origin):
    srv = tls_redis(redis_factory, pki)
    http, server = cache_conf(srv, store_origin,
                              "tls=on tls_verify=off")
    ngx = start_nginx(http=http, server=server, workers=1)
    wait_status(ngx, "/warm", ("MISS", "HIT"))
    requests.get(ngx.url("/v"))
    r = requests.get(ngx.url("/v"))
    assert r.headers["X-Cache-Status"] == "HIT"


def test_cleartext_to_a_tls_port_bypasses(start_nginx, redis_factory, pki,
                                          store_origin):
    srv = tls_redis(redis_factory, pki)
    http, server = cache_conf(srv, store_origin, "timeout=200ms")
    ngx = start_nginx(http=http, server=server, workers=1)
    time.sleep(0.3)
    assert_bypasses(ngx, store_origin, "/ct")


def test_tls_redis_restart_reconnects(start_nginx, redis_factory, pki,
                                      store_origin):
    srv = tls_redis(redis_factory, pki)
    http, server = cache_conf(srv, store_origin,
                              f"tls=on tls_ca={pki.ca[0]}")
    ngx = start_nginx(http=http, server=server, workers=1)
    wait_status(ngx, "/r", ("HIT",))
    srv.stop()
    r = requests.get(ngx.url("/r"), timeout=5)
    assert r.headers["X-Cache-Status"] == "BYPASS"
    srv.start()
    r = wait_status(ngx, "/r2", ("HIT",), timeout=8)
    assert r.headers["X-Cache-Status"] == "HIT"


@pytest.mark.parametrize("params,msg", [
    ("tls_ca=/x.pem", "without tls=on"),
    ("tls_server_name=a.b", "without tls=on"),
    ("tls=on tls_cert=/x.pem", "tls_cert= and tls_key= together"),
    ("tls=on tls_verify=maybe", "invalid parameter"),
    ("tls=on tls_ca=/nonexistent/ca.pem", "ca.pem"),
])
def test_tls_config_errors(nginx_t, params, msg):
    rc, out = nginx_t(http=f"infergate_redis r 127.0.0.1:6379 {params};")
    assert rc != 0
    assert msg in out, out


def test_tls_unix_socket_needs_a_name(nginx_t):
    rc, out = nginx_t(http="infergate_redis r unix:/run/r.sock tls=on;")
    assert rc != 0
    assert "tls_server_name" in out, out
    rc, out = nginx_t(http="infergate_redis r unix:/run/r.sock tls=on "
                           "tls_verify=off;")
    assert rc == 0, out
