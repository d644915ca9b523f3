"""
lib/ is the one shared contract and is built once: nothing in it reaches
outside it, the module takes from build/libig.a only what it uses (no
audit verifier in the .so), and the builds track lib/'s headers.
"""

import re
import subprocess

from conftest import BUILD, REPO


def test_lib_includes_nothing_outside_lib():
    bad = []
    for f in sorted((REPO / "lib").glob("*.[ch]")):
        for n, line in enumerate(f.read_text().splitlines(), 1):
            if re.match(r'\s*#\s*include\s+"\.\./', line):
                bad.append(f"{f.name}:{n}: {line.strip()}")
    assert bad == []


def test_module_has_no_audit_verifier():
    nm = subprocess.run(["nm", str(BUILD / "ngx_http_infergate_module.so")],
                        capture_output=True, text=True, check=True).stdout
    assert " ig_audit_" in nm, "not the module with the audit writer?"
    found = [l for l in nm.splitlines()
             if re.search(r" ig_(audit_verify|av)_\w+$", l)]
    assert found == []


def test_module_depends_on_every_lib_header():
    # nginx's Makefile for the module: a lib/ header (ig_tensor.h, shared
    # with the backend) touched rebuilds the module's objects
    mk = (BUILD / "objs" / "Makefile").read_text()
    for h in ("ig_tensor.h", "ig_ring.h", "ig_oip.h"):
        assert f"lib/{h}" in mk, h


def test_header_dependencies_are_tracked():
    # -MMD: the OIP codec's object and the backend's ring server name
    # lib/ig_tensor.h among their dependencies
    for d in (BUILD / "lib" / "ig_oip.o.d",
              BUILD / "backend" / "ring_server.o.d"):
        assert "lib/ig_tensor.h" in d.read_text(), d
