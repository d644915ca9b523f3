"""JSON-Schema-Test-Suite (draft 2020-12) through nginx: every group whose
schema uses only supported keywords gets a location; every case is POSTed
(json.dumps, application/json); valid -> 200 from the origin, invalid ->
400 problem+json.  Groups with unsupported keywords must fail nginx -t."""

import json
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from conftest import REPO, NginxError, assert_problem


SUITE = Path(os.environ.get("IG_CONFORMANCE_DIR") or
             REPO / "tests" / "conformance" / "json-schema-test-suite")

SUPPORTED = {
    "type", "required", "properties", "additionalProperties", "enum",
    "const", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum",
    "minLength", "maxLength", "pattern", "items", "minItems", "maxItems",
    "format",
}
ANNOTATIONS = {"$schema", "$comment", "title", "description"}


def unsupported(schema):
    """Keywords (or keyword misuses) outside the supported subset."""
    bad = set()
    if isinstance(schema, bool):
        return bad
    if not isinstance(schema, dict):
        return {"<non-schema>"}
    for k, v in schema.items():
        if k not in SUPPORTED | ANNOTATIONS:
            bad.add(k)
        elif k == "properties":
            for sub in v.values():
                bad |= unsupported(sub)
        elif k == "items":
            if isinstance(v, list):
                bad.add("items(array)")
            else:
                bad |= unsupported(v)
        elif k == "additionalProperties" and not isinstance(v, bool):
            bad.add("additionalProperties(schema)")
    return bad


def load_groups():
    if not SUITE.is_dir():
        return []
    files = sorted(SUITE.glob("*.json")) + \
        sorted((SUITE / "optional" / "format").glob("*.json"))
    groups = []
    for f in files:
        for g in json.loads(f.read_text()):
            groups.append({
                "file": str(f.relative_to(SUITE)),
                "description": g["description"],
                "schema": g["schema"],
                "tests": g["tests"],
                "unsupported": unsupported(g["schema"]),
            })
    return groups


GROUPS = load_groups()
SUPPORTED_GROUPS = [g for g in GROUPS if not g["unsupported"]]
UNSUPPORTED_GROUPS = [g for g in GROUPS if g["unsupported"]]


def test_suite_present():
    # the cases ship in the repository: a missing suite is a failure,
    # never a silent skip
    assert GROUPS, f"conformance suite not found at {SUITE}"
    assert SUPPORTED_GROUPS and UNSUPPORTED_GROUPS


def run_groups(start_nginx, nginx_t, groups):
    """Starts one nginx with a location per group, POSTs every case and
    returns (number of cases, [mismatch descriptions])."""
    files, locs = {}, []
    for i, g in enumerate(groups):
        files[f"g{i}.json"] = json.dumps(g["schema"])
        locs.append(f"location = /g{i} {{ infergate_schema g{i}.json; "
                    f"@PROXY@ }}")
    try:
        ngx = start_nginx(server="\n".join(locs), files=files)
    except NginxError as e:
        # find the schemas the module refuses, one nginx -t each
        refused = []
        for i, g in enumerate(groups):
            rc, out = nginx_t(server=locs[i], files={
                f"g{i}.json": files[f"g{i}.json"]})
            if rc != 0:
                refused.append(f"{g['file']} / {g['description']}: "
                               f"{out.strip().splitlines()[0]}")
        pytest.fail(f"nginx refused {len(refused)} supported schemas:\n"
                    + "\n".join(refused) + f"\n\n{e}")

    cases = [(i, g, t) for i, g in enumerate(groups) for t in g["tests"]]
    local = threading.local()

    def run(case):
        i, g, t = case
        if not hasattr(local, "s"):
            local.s = requests.Session()
        body = json.dumps(t["data"]).encode()
        try:
            r = local.s.post(ngx.url(f"/g{i}"), data=body,
                             headers={"Content-Type": "application/json"},
                             timeout=30)
        except requests.RequestException as e:
            return f"{e!r}"
        if t["valid"]:
            if r.status_code != 200 or r.content != b'{"ok":true}':
                return f"expected 200, got {r.status_code} " \
                       f"{r.content[:300]!r}"
        else:
            try:
                assert_problem(r, 400)
            except AssertionError as e:
                return str(e).splitlines()[0]
        return None

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(run, cases))
    mismatches = [
        f"{g['file']} / {g['description']} / {t['description']}: "
        f"data={json.dumps(t['data'])[:120]} valid={t['valid']}: {res}"
        for (i, g, t), res in zip(cases, results) if res]
    return len(cases), mismatches


def test_supported_groups_through_nginx(start_nginx, nginx_t):
    assert len(SUPPORTED_GROUPS) > 50, len(SUPPORTED_GROUPS)
    n, mismatches = run_groups(start_nginx, nginx_t, SUPPORTED_GROUPS)
    print(f"\nconformance: {len(SUPPORTED_GROUPS)} groups, {n} cases, "
          f"{n - len(mismatches)} pass, {len(mismatches)} mismatch; "
          f"{len(UNSUPPORTED_GROUPS)} groups skipped for unsupported "
          f"keywords")
    assert not mismatches, f"{len(mismatches)} of {n} cases mismatch:\n" \
        + "\n".join(mismatches)


# A schema-valued additionalProperties is outside the contract's subset;
# the module may refuse it, or support it, but then it must be right.
EXTENSIONS = {"additionalProperties(schema)"}


def test_unsupported_groups_rejected_by_nginx_t(start_nginx, nginx_t):
    # one group per distinct unsupported keyword
    sample, seen = [], set()
    for g in UNSUPPORTED_GROUPS:
        new = g["unsupported"] - seen
        if new:
            sample.append(g)
            seen |= g["unsupported"]
    assert sample
    wrong, accepted_extensions = [], []
    for g in sample:
        rc, out = nginx_t(server="location / { infergate_schema s.json; }",
                          files={"s.json": json.dumps(g["schema"])})
        kws = {k.split("(")[0] for k in g["unsupported"]}
        if rc == 0:
            if g["unsupported"] <= EXTENSIONS:
                accepted_extensions.append(g)
            else:
                wrong.append(f"{g['file']} / {g['description']}: accepted "
                             f"(uses {sorted(g['unsupported'])})")
        elif "s.json" not in out or not any(k in out for k in kws):
            wrong.append(f"{g['file']} / {g['description']}: message names "
                         f"neither s.json nor {sorted(kws)}: {out.strip()}")
    assert not wrong, "\n".join(wrong)
    if accepted_extensions:
        groups = [g for g in UNSUPPORTED_GROUPS
                  if g["unsupported"] <= EXTENSIONS]
        n, mismatches = run_groups(start_nginx, nginx_t, groups)
        assert not mismatches, \
            "accepted beyond the subset, but validated wrongly:\n" + \
            "\n".join(mismatches)
