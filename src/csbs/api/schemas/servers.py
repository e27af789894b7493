"""Wire models of the server inventory (our extension; admins register, projects read)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from csbs.domain.inventory import Server, ServerStatus


class DiskCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: str = Field(min_length=1, max_length=4096)
    name: str | None = Field(default=None, min_length=1, max_length=255)


class ServerCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=255)
    host: str | None = Field(default=None, min_length=1, max_length=255)
    status: ServerStatus = ServerStatus.STOPPED
    disks: list[DiskCreate] = Field(min_length=1, max_length=24)
    #: accept disk image files with other hard links (refused by default)
    allow_hardlinks: bool = False


class ServerCreateBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    server: ServerCreate


class ServerStatusUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    status: ServerStatus


class ServerStatusBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    server: ServerStatusUpdate


def server_body(server: Server) -> dict[str, Any]:
    return {
        "id": server.id,
        "name": server.name,
        "project_id": server.project_id,
        "host": server.host,
        "status": server.status.value,
        #: manual (registered with disk paths) or libvirt (a discovered domain)
        "source": server.source.value,
        "created_at": server.created_at.strftime("%Y-%m-%dT%H:%M:%S.%f"),
        "disks": [
            {
                "id": d.id,
                "name": d.name,
                "device_name": d.device_name,
                "path": d.path,
                "size_bytes": d.size_bytes,
                "size_gb": round(d.size_bytes / 2**30, 3),
                "bootable": d.bootable,
                # libvirt disks: the guest's device, its format, and why csbs cannot back
                # it up (null when it can)
                "target": d.target,
                "format": d.format,
                "unsupported": d.unsupported,
            }
            for d in server.disks
        ],
    }
