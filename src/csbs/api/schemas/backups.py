"""CSBS wire shapes of backup records, backups and the capability checks (spec §4.1-4.8, §6)."""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from csbs.api.schemas.common import timestamp
from csbs.domain.backups import Backup, Checkpoint

MB = 1024 * 1024


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore")


class TagIn(_Lenient):
    key: str = Field(max_length=127)
    value: str = Field(max_length=255)


class ProtectParam(_Lenient):
    backup_name: str | None = Field(default=None, max_length=255)
    description: str | None = Field(default=None, max_length=255)
    incremental: bool | None = None
    resource_type: str = Field(default="OS::Nova::Server", max_length=64)
    tags: list[TagIn] | None = Field(default=None, min_length=1)
    extra_info: dict[str, Any] | None = None


class ProtectBody(_Lenient):
    protect: ProtectParam


class ProtectableItem(_Lenient):
    resource_id: str = Field(min_length=1, max_length=64)
    resource_type: str = Field(min_length=1, max_length=64)


class RestorableVolume(_Lenient):
    backup_id: str = Field(min_length=1, max_length=64)
    volume_id: str = Field(min_length=1, max_length=64)


class RestorableTarget(_Lenient):
    resource_id: str = Field(min_length=1, max_length=64)
    resource_type: str = Field(min_length=1, max_length=64)
    volumes: list[RestorableVolume]


class RestorableItem(_Lenient):
    checkpoint_item_id: str = Field(min_length=1, max_length=64)
    target: RestorableTarget


class ResourcesActionBody(_Lenient):
    check_protectable: list[ProtectableItem] | None = Field(
        default=None, min_length=1, max_length=100
    )
    check_restorable: list[RestorableItem] | None = Field(
        default=None, min_length=1, max_length=100
    )


def _plan(cp: Checkpoint) -> dict[str, Any]:
    return {
        "id": cp.plan_id,
        "name": cp.plan_name,
        "resources": [
            {"id": rid, "type": "OS::Nova::Server", "name": rname, "extra_info": {}}
            for rid, rname in cp.resources
        ],
    }


def resource_graph(cp: Checkpoint) -> str:
    """Karbor's packed resource graph as JSON text in a string (spec §11.11): the nodes by
    key, each `[type, id, name, extra_info]`, then the adjacency (servers have no children
    here). Clients `json.loads` it, so it is never null."""
    nodes = {
        f"0x{i:x}": ["OS::Nova::Server", rid, rname, {}]
        for i, (rid, rname) in enumerate(cp.resources)
    }
    return json.dumps([nodes, {}])


def checkpoint_body(cp: Checkpoint) -> dict[str, Any]:
    return {
        "id": cp.id,
        "status": cp.status.value,
        "created_at": timestamp(cp.created_at),
        "project_id": cp.project_id,
        "resource_graph": resource_graph(cp),
        "extra_info": {"created_by": cp.created_by},
        "protection_plan": _plan(cp),
    }


def _speed_kbs(nbytes: int, seconds: float) -> float:
    return round(nbytes / 1024 / seconds, 1) if seconds > 0 else 0.0


def _ratio(logical: int, stored: int) -> float:
    return round(logical / stored, 2) if stored > 0 else 0.0


def backup_body(b: Backup, region: str) -> dict[str, Any]:
    unchanged = set(b.extra.get("unchanged_disks") or ())
    seconds = sum(d.seconds for d in b.disks)
    stored = sum(d.stored_bytes for d in b.disks)
    fail_code = {"Code": b.fail_code, "Description": b.fail_reason} if b.fail_code else {}
    return {
        "id": b.id,
        "checkpoint_id": b.checkpoint_id,
        "name": b.name,
        "description": b.description,
        "resource_id": b.resource_id,
        "resource_type": b.resource_type,
        "status": b.status.value,
        "created_at": timestamp(b.created_at),
        "updated_at": timestamp(b.updated_at),
        "protected_at": timestamp(b.protected_at),
        "tags": [{"key": t.key, "value": t.value} for t in b.tags],
        "backup_data": {
            "__openstack_region_name": "",
            "cloudservicetype": "QEMU",
            "disk": round(b.disks[0].source_size / 2**30) if b.disks else 0,
            "imagetype": "private",
            "ram": 0,
            "vcpus": 0,
            "eip": "",
            "private_ip": "",
        },
        "extend_info": {
            "auto_trigger": b.auto_trigger,
            "average_speed": _speed_kbs(b.new_bytes or b.logical_bytes, seconds),
            "copy_from": "",
            "copy_status": "na",
            "fail_code": fail_code,
            "fail_op": b.fail_op,
            "fail_reason": b.fail_reason,
            "image_type": "backup",
            "incremental": b.incremental,
            # Why a VM backup read its disks in full (first backup, a broken chain...).
            "incremental_reason": str(b.extra.get("incremental_reason") or ""),
            "progress": b.progress,
            "resource_az": region,
            "resource_name": b.resource_name,
            "resource_type": b.resource_type,
            "size": round(sum(d.source_size for d in b.disks) / MB),
            "space_saving_ratio": _ratio(b.logical_bytes, stored),
            "finished_at": timestamp(b.finished_at),
            "supported_restore_mode": "backup",
            "support_lld": False,
            "taskid": b.task_id or "",
            "hypervisor_type": "QEMU",
            "os_images_data": [],
            "consistency": b.consistency,
            "stored_bytes": stored,
            "logical_bytes": b.logical_bytes,
            "new_bytes": b.new_bytes,
            "reused_bytes": sum(d.reused_bytes for d in b.disks),
            "bytes_read": int(b.extra.get("bytes_read") or 0),
            "volume_backups": [
                {
                    "id": d.id,
                    "name": d.disk_name,
                    "status": d.status.value,
                    "bootable": d.bootable,
                    "incremental": d.incremental,
                    "image_type": "backup",
                    "size": round(d.logical_bytes / MB),
                    "average_speed": round(d.new_bytes / MB / d.seconds, 1) if d.seconds else 0.0,
                    "space_saving_ratio": _ratio(d.logical_bytes, d.stored_bytes),
                    "source_volume_id": d.disk_id,
                    "source_volume_name": d.device_name,
                    "source_volume_size": round(d.source_size / 2**30, 3),
                    "snapshot_id": "",
                    "skipped_unchanged": d.disk_id in unchanged,
                }
                for d in b.disks
            ],
        },
        "replication_records": [],
    }
