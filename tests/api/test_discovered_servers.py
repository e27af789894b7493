"""Discovered libvirt domains through the API: unassigned ones seen by admins only, assigned
by an admin, a Nova instance in its project, statuses that follow libvirt."""

from __future__ import annotations

import uuid

from csbs.domain.identity import Role
from csbs.services.discovery import HostWatcher
from tests.support.libvirt import NETWORK_DISK, URI, disk_xml, libvirt_domains, nova_metadata
from tests.support.runtime import Env

PROVIDER = "fc4d5750-22e7-4798-8a46-f48f62c4c1da"


def test_an_admin_assigns_a_discovered_domain_to_a_project(env: Env) -> None:
    member = env.add_user("mia", "alpha", Role.MEMBER)
    alpha = env.project_id("alpha")
    env.add_user("bo", "beta", Role.MEMBER)
    beta = env.project_id("beta")
    admin = env.admin_token()
    admin_project = env.project_id("admin")
    h = {"X-Auth-Token": admin}
    with libvirt_domains() as vms:
        plain = vms.define()
        nova = vms.define(metadata=nova_metadata(beta))
        odd = vms.define(disks=[disk_xml(vms.image("sys"), "vda"), NETWORK_DISK])
        HostWatcher(env.services.db, env.clock, f"kvm-{uuid.uuid4().hex[:6]}", URI).sync_once()
    sid = plain.UUIDString()

    # unassigned: listed for admins, in no project's list, found by no tenant
    r = env.client.get(f"/v1/{admin_project}/servers/unassigned", headers=h)
    assert r.status_code == 200, r.text
    listed = {s["id"]: s for s in r.json()["servers"]}
    assert {sid, odd.UUIDString()} <= listed.keys() and nova.UUIDString() not in listed
    body = listed[sid]
    assert body["source"] == "libvirt" and body["project_id"] is None
    assert body["name"] == plain.name() and body["status"] == "stopped"
    assert [(d["target"], d["format"], d["unsupported"]) for d in body["disks"]] == [
        ("vda", "qcow2", None)
    ]
    m = {"X-Auth-Token": member}
    assert env.client.get(f"/v1/{alpha}/servers/unassigned", headers=m).status_code == 403
    assert env.client.get(f"/v1/{alpha}/servers/{sid}", headers=m).status_code == 400
    assert env.client.post(f"/v1/{alpha}/servers/{sid}/assign", headers=m).status_code == 403

    r = env.client.post(f"/v1/{alpha}/servers/{sid}/assign", headers=h)
    assert r.status_code == 200, r.text
    assert r.json()["server"]["project_id"] == alpha
    mine = env.client.get(f"/v1/{alpha}/servers", headers=m).json()["servers"]
    assert [s["id"] for s in mine] == [sid]
    # once assigned, it is not another project's to take; assigning again is a no-op
    again = env.client.post(f"/v1/{beta}/servers/{sid}/assign", headers=h)
    assert again.status_code == 400 and again.json()["error_code"] == "CSBS.9001"
    assert env.client.post(f"/v1/{alpha}/servers/{sid}/assign", headers=h).status_code == 200
    # its status follows libvirt, not an admin's word
    put = env.client.put(
        f"/v1/{alpha}/servers/{sid}", headers=h, json={"server": {"status": "running"}}
    )
    assert put.status_code == 400 and "follows libvirt" in put.json()["error_msg"]

    # a Nova instance is already its project's; an admin cannot move it
    b = env.client.get(f"/v1/{beta}/servers/{nova.UUIDString()}", headers=h)
    assert b.status_code == 200 and b.json()["server"]["project_id"] == beta
    moved = env.client.post(f"/v1/{alpha}/servers/{nova.UUIDString()}/assign", headers=h)
    assert moved.status_code == 400 and "Nova" in moved.json()["error_msg"]
    unknown = env.client.post(f"/v1/{alpha}/servers/{uuid.uuid4()}/assign", headers=h)
    assert unknown.status_code == 400 and unknown.json()["error_code"] == "CSBS.6000"

    # R2 answers false with the reason for the domain with a network disk
    env.client.post(f"/v1/{alpha}/servers/{odd.UUIDString()}/assign", headers=h)
    r = env.client.post(
        f"/v1/{alpha}/providers/{PROVIDER}/resources/action",
        headers=m,
        json={
            "check_protectable": [
                {"resource_id": odd.UUIDString(), "resource_type": "OS::Nova::Server"},
                {"resource_id": sid, "resource_type": "OS::Nova::Server"},
            ]
        },
    )
    assert r.status_code == 200, r.text
    bad, good = r.json()["protectable"]
    assert bad["result"] is False and bad["error_code"] == "CSBS.6061"
    assert "network disk" in bad["error_msg"]
    assert good["result"] is True
