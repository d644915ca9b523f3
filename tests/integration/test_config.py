"""Configurations nginx -t must reject, each with a message naming the
file / directive / offending value, and ones it must accept."""

import re

import pytest

from conftest import REPO, SCORE_SCHEMA, make_key


def assert_rejected(rc, out, *needles):
    assert rc != 0, f"nginx -t accepted the configuration:\n{out}"
    assert "[emerg]" in out, out
    for n in needles:
        if isinstance(n, re.Pattern):
            assert n.search(out), f"{n.pattern!r} not in:\n{out}"
        else:
            assert n in out, f"{n!r} not in:\n{out}"


def test_valid_config_accepted(nginx_t):
    _, line = make_key("acme", "rate=5r/s burst=3 models=a,b")
    rc, out = nginx_t(
        http="infergate_keys keys.txt; infergate_limit_zone z 1m;",
        server="""location / { infergate_auth on;
                      infergate_limit zone=z rate=10r/s burst=5 dry_run;
                      infergate_limit zone=z rate=600r/m key=$uri;
                      infergate_limit_headers both;
                      infergate_model $arg_model;
                      infergate_schema s.json;
                      infergate_schema_max_depth 8;
                      return 204; }""",
        files={"keys.txt": f"# c\n\n{line}\n", "s.json":
               SCORE_SCHEMA.read_text()})
    assert rc == 0, out
    assert "test is successful" in out


def test_example_conf_accepted(nginx_t):
    _, line = make_key("acme")
    # nginx -t binds nothing, so the example's fixed ports can stay
    conf = (REPO / "conf" / "infergate.conf").read_text()
    rc, out = nginx_t(http=conf, files={
        "keys.txt": line + "\n",
        "schemas/score.json": SCORE_SCHEMA.read_text(),
        "schemas/infer.json":
            (REPO / "conf" / "schemas" / "infer.json").read_text()})
    assert rc == 0, out


# -- keys file ---------------------------------------------------------------

GOOD = "a" * 64


@pytest.mark.parametrize("bad", [
    "abc acme",                                    # short digest
    "g" * 64 + " acme",                            # not hex
    GOOD,                                          # missing tenant
    GOOD + " acme frobnicate=1",                   # unknown option
    GOOD + " acme rate=10r/x",                     # bad rate unit
    GOOD + " acme rate=0r/s",                      # zero rate
    GOOD + " acme burst=-1",                       # negative burst
    GOOD + " acme rate=1r/s rate=2r/s",            # duplicate option
    GOOD + " acme models=",                        # empty models
    GOOD + " ac/me",                               # bad tenant name
])
def test_bad_keys_line_names_file_and_line(nginx_t, bad):
    keys = f"# header\n\n{'b' * 64} fine\n{bad}\n{'c' * 64} fine2\n"
    rc, out = nginx_t(http="infergate_keys keys.txt;",
                      files={"keys.txt": keys})
    assert_rejected(rc, out, re.compile(r"keys\.txt:4\b"))


def test_missing_keys_file(nginx_t):
    rc, out = nginx_t(http="infergate_keys nope.txt;")
    assert_rejected(rc, out, "nope.txt")


# -- schemas -----------------------------------------------------------------

@pytest.mark.parametrize("schema,needles", [
    ('{"type": "object", "properties": {"a": {"patternProperties": {}}}}',
     ["/properties/a", "patternProperties"]),
    ('{"allOf": [{"type": "string"}]}', ["allOf"]),
    ('{"properties": {"x": {"items": {"$ref": "#"}}}}',
     ["/properties/x/items", "$ref"]),
    ('{"properties": {"a": {"minimum": "zero"}}}', ["/properties/a/minimum"]),
    ('{"type": "strung"}', ["type"]),
    ('{"properties": {"a": {"pattern": "(unclosed"}}}',
     ["/properties/a/pattern"]),
    ('{"required": "a"}', ["required"]),
    ('{"type": "object",', []),                       # not JSON
    ('', []),                                         # empty file
])
def test_bad_schema_rejected_naming_file_and_pointer(nginx_t, schema,
                                                     needles):
    rc, out = nginx_t(server="location / { infergate_schema bad-schema.json;"
                             " return 204; }",
                      files={"bad-schema.json": schema})
    assert_rejected(rc, out, "bad-schema.json", *needles)


def test_missing_schema_file(nginx_t):
    rc, out = nginx_t(server="location / { infergate_schema gone.json; }")
    assert_rejected(rc, out, "gone.json")


@pytest.mark.parametrize("value", ["-1", "abc"])
def test_bad_max_depth(nginx_t, value):
    rc, out = nginx_t(server=f"location / {{ infergate_schema_max_depth "
                             f"{value}; }}")
    assert_rejected(rc, out, "infergate_schema_max_depth")


# -- limits ------------------------------------------------------------------

def test_unknown_zone(nginx_t):
    rc, out = nginx_t(http="infergate_limit_zone z 1m;",
                      server="location / { infergate_limit zone=nope "
                             "rate=1r/s; }")
    assert_rejected(rc, out, "nope")


@pytest.mark.parametrize("rate", ["10r/x", "0r/s", "abc", "r/s", "-1r/s",
                                  "10", "1.5r/s", "2000000r/s"])
def test_bad_rate(nginx_t, rate):
    rc, out = nginx_t(http="infergate_limit_zone z 1m;",
                      server=f"location / {{ infergate_limit zone=z "
                             f"rate={rate}; }}")
    assert_rejected(rc, out, rate, "nginx.conf:")


def test_missing_rate(nginx_t):
    rc, out = nginx_t(http="infergate_limit_zone z 1m;",
                      server="location / { infergate_limit zone=z; }")
    assert_rejected(rc, out, "rate")


@pytest.mark.parametrize("arg", ["burst=-1", "burst=x", "frob=1"])
def test_bad_limit_option(nginx_t, arg):
    rc, out = nginx_t(http="infergate_limit_zone z 1m;",
                      server=f"location / {{ infergate_limit zone=z "
                             f"rate=1r/s {arg}; }}")
    assert_rejected(rc, out, arg)


def test_zone_too_small(nginx_t):
    rc, out = nginx_t(http="infergate_limit_zone tiny 1k;",
                      server="location / { infergate_limit zone=tiny "
                             "rate=1r/s; }")
    assert_rejected(rc, out, "tiny")


def test_bad_zone_size(nginx_t):
    rc, out = nginx_t(http="infergate_limit_zone z lots;")
    assert_rejected(rc, out, "lots")


def test_duplicate_zone(nginx_t):
    rc, out = nginx_t(http="infergate_limit_zone z 1m; "
                           "infergate_limit_zone z 2m;")
    assert_rejected(rc, out, '"z"')


def test_limit_without_zone(nginx_t):
    rc, out = nginx_t(http="infergate_limit_zone z 1m;",
                      server="location / { infergate_limit rate=1r/s; }")
    assert_rejected(rc, out, "zone")


def test_bad_limit_headers_value(nginx_t):
    rc, out = nginx_t(server="location / { infergate_limit_headers "
                             "sideways; }")
    assert_rejected(rc, out, "sideways")


def test_bad_auth_value(nginx_t):
    rc, out = nginx_t(server="location / { infergate_auth maybe; }")
    assert_rejected(rc, out, "infergate_auth")


@pytest.mark.parametrize("directive", [
    "infergate_keys k.txt;", "infergate_limit_zone z 1m;"])
def test_http_only_directives_rejected_in_location(nginx_t, directive):
    rc, out = nginx_t(server=f"location / {{ {directive} }}",
                      files={"k.txt": ""})
    assert_rejected(rc, out, directive.split()[0])
