"""Multi-tenancy with the NGSILD-Tenant header."""

from __future__ import annotations

from conftest import Api, camera


def test_tenants_are_isolated(api: Api) -> None:
    api.create(camera(1), headers={"NGSILD-Tenant": "gwacheon"})
    api.create(camera(2))
    gwacheon = api.get("/entities", params={"type": "Camera"}, headers={"NGSILD-Tenant": "gwacheon"}).json()
    default = api.get("/entities", params={"type": "Camera"}).json()
    assert [e["id"] for e in gwacheon] == ["urn:ngsi-ld:Camera:001"]
    assert [e["id"] for e in default] == ["urn:ngsi-ld:Camera:002"]
    assert api.get("/entities/urn:ngsi-ld:Camera:001").status_code == 404


def test_reading_a_tenant_that_was_never_written_is_404_nonexistent_tenant(api: Api) -> None:
    response = api.get("/entities", params={"type": "Camera"}, headers={"NGSILD-Tenant": "nowhere"})
    assert response.status_code == 404
    assert response.json()["type"].endswith("NonexistentTenant")


def test_invalid_tenant_name_is_400(api: Api) -> None:
    response = api.post("/entities", camera(1), headers={"NGSILD-Tenant": "../../etc"})
    assert response.status_code == 400
