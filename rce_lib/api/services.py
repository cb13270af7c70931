"""Which downstream service each task type loads, and the Airflow pool that bounds it.

The contract names three component services with fleet-wide capacity (vcenter,
nsx, esx). Prechecks, snapshots and rollbacks run against the management plane,
so they count against vcenter. One pool per service bounds our in-flight work.
"""

from __future__ import annotations

from enum import StrEnum

from rce_lib.api.models import TaskType


class Service(StrEnum):
    VCENTER = "vcenter"
    NSX = "nsx"
    ESX = "esx"


TASK_SERVICE: dict[TaskType, Service] = {
    TaskType.PRECHECK: Service.VCENTER,
    TaskType.SNAPSHOT: Service.VCENTER,
    TaskType.UPGRADE_VCENTER: Service.VCENTER,
    TaskType.ROLLBACK: Service.VCENTER,
    TaskType.UPGRADE_NSX: Service.NSX,
    TaskType.HOST_MAINTENANCE: Service.ESX,
    TaskType.UPGRADE_HOST: Service.ESX,
}

POOL_FOR_SERVICE: dict[Service, str] = {
    Service.VCENTER: "rce_vcenter",
    Service.NSX: "rce_nsx",
    Service.ESX: "rce_esx",
}
