"""
The whole guard chain in one location: auth → limit → schema → Bloom →
cache → origin.  An id that cannot exist is refused with no Redis command
and no origin request (counted: Redis INFO commandstats, the recording
origin); a known id goes on to the cache and the origin.
"""

import requests

from conftest import JSON_CT, assert_problem, bearer, make_key
from redis_fixtures import redis_factory, redis_server  # noqa
from test_bloom import build_filter

SCHEMA = '{"type":"object","required":["user_id"],' \
         '"properties":{"user_id":{"type":"string"}}}'


def test_unknown_id_costs_no_redis_command(start_nginx, origin, tmp_path,
                                           redis_server):
    bloom = tmp_path / "users.bloom"
    bloom.write_bytes(build_filter(tmp_path, ["u1", "u2", "u3"],
                                   capacity=1000, error=0.001))
    k, line = make_key("acme")
    ngx = start_nginx(workers=2, http=f"""
        infergate_keys @PREFIX@/keys.txt;
        infergate_limit_zone z 1m;
        infergate_redis r {redis_server.address} timeout=200ms;
        infergate_bloom_zone users 1m capacity=1000 error=0.001
                             file={bloom};
    """, server="""
        location /score {
            infergate_auth on;
            infergate_limit zone=z rate=1000r/s burst=1000;
            infergate_schema @PREFIX@/s.json;
            infergate_bloom zone=users key=$infergate_json_user_id
                            methods=POST;
            infergate_cache redis=r ttl=60s methods=POST;
            @PROXY@
        }
    """, files={"keys.txt": line + "\n", "s.json": SCHEMA})

    h = {**JSON_CT, **bearer(k)}

    # a known id: limit and cache go to Redis, the origin answers
    origin.clear()
    redis_server.reset_stats()
    r = requests.post(ngx.url("/score"), data='{"user_id":"u1"}', headers=h)
    assert r.status_code == 200, r.text
    assert r.headers["X-Cache-Status"] == "MISS"
    assert len(origin.find(path="/score")) == 1
    assert sum(redis_server.commandstats().values()) > 0

    # the fill lands after the response: wait for it (a HIT) before counting
    import time
    deadline = time.time() + 10
    while requests.post(ngx.url("/score"), data='{"user_id":"u1"}',
                        headers=h).headers["X-Cache-Status"] != "HIT":
        assert time.time() < deadline, "the entry was never stored"
        time.sleep(0.05)

    # unknown ids: 404 #unknown-id, not one Redis command, no origin
    origin.clear()
    redis_server.reset_stats()
    for i in range(20):
        r = requests.post(ngx.url("/score"), headers=h,
                          data=f'{{"user_id":"ghost{i}"}}')
        assert_problem(r, 404, "https://infergate.dev/problems#unknown-id")
    stats = redis_server.commandstats()
    # the INFO that reads the figures is the only command counted
    assert set(stats) <= {"info", "config|resetstat", "config"}, stats
    assert origin.find(path="/score") == []
